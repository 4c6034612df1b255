"""ccm.kube against the real kube-apiserver: paging, watches, 410s, relists, patches, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube import events as kevents
from ccm.kube import informer as kinformer

pytestmark = pytest.mark.e2e


@pytest.fixture
async def kube(control_plane: Any) -> AsyncIterator[kclient.KubeClient]:
    client = await kclient.KubeClient.connect(
        kubeconfig=str(control_plane.kubeconfig_path), qps=500, burst=500, user_agent="ccm-e2e"
    )
    try:
        yield client
    finally:
        await client.aclose()


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels)}, "data": {"k": "v"}}


async def test_list_all_follows_continue_tokens(
    kube: kclient.KubeClient, kube_namespace: str
) -> None:
    for i in range(5):
        await kube.create(
            kclient.CONFIGMAPS, configmap(f"cm-{i}", paged="yes"), namespace=kube_namespace
        )
    first = await kube.list(
        kclient.CONFIGMAPS, namespace=kube_namespace, label_selector="paged=yes", limit=2
    )
    assert len(first["items"]) == 2
    assert first["metadata"]["continue"]
    before = kube.requests_total["list"]
    items, rv = await kube.list_all(
        kclient.CONFIGMAPS, namespace=kube_namespace, label_selector="paged=yes", page_size=2
    )
    assert sorted(i["metadata"]["name"] for i in items) == [f"cm-{i}" for i in range(5)]
    assert kube.requests_total["list"] - before == 3
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)
    assert int(rv) > 0


async def test_watch_sees_added_modified_deleted(
    kube: kclient.KubeClient, kube_namespace: str
) -> None:
    _, rv = await kube.list_all(kclient.CONFIGMAPS, namespace=kube_namespace)
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        watch = kube.watch(
            kclient.CONFIGMAPS, namespace=kube_namespace, resource_version=rv, timeout_seconds=30
        )
        async with contextlib.aclosing(watch) as stream:
            async for event in stream:
                if event["type"] == "BOOKMARK":
                    continue
                seen.append((event["type"], event["object"]["metadata"]["name"]))
                if event["type"] == "DELETED":
                    return

    task = asyncio.create_task(consume())
    await kube.create(kclient.CONFIGMAPS, configmap("watched"), namespace=kube_namespace)
    await kube.patch(kclient.CONFIGMAPS, "watched", {"data": {"k": "w"}}, namespace=kube_namespace)
    await kube.delete(kclient.CONFIGMAPS, "watched", namespace=kube_namespace)
    await asyncio.wait_for(task, 15)
    assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


async def compact_etcd(etcd_url: str) -> int:
    """Compact etcd at its current revision, as the apiserver's compactor does every 5 minutes."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{etcd_url}/v3/kv/range", json={"key": "AA==", "limit": 1}
        ) as resp:
            resp.raise_for_status()
            revision = int((await resp.json())["header"]["revision"])
        async with session.post(
            f"{etcd_url}/v3/kv/compaction", json={"revision": revision, "physical": True}
        ) as resp:
            resp.raise_for_status()
    return revision


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


def event_body(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": namespace},
        "reason": "Test",
        "message": name,
    }


async def test_watch_from_a_too_old_resource_version_raises_gone(
    control_plane: Any, kube: kclient.KubeClient, kube_namespace: str
) -> None:
    # Events have no watch cache by default, so the watch goes to etcd, which has compacted.
    first = await kube.create(
        kclient.EVENTS, event_body("e1", kube_namespace), namespace=kube_namespace
    )
    for name in ("e2", "e3"):  # compaction keeps its own revision: two writes after e1
        await kube.create(
            kclient.EVENTS, event_body(name, kube_namespace), namespace=kube_namespace
        )
    await compact_etcd(control_plane.etcd_url)

    async def consume() -> None:
        async for _ in kube.watch(
            kclient.EVENTS,
            namespace=kube_namespace,
            resource_version=first["metadata"]["resourceVersion"],
            timeout_seconds=5,
        ):
            pass

    with pytest.raises(errors.GoneError, match="too old") as info:
        await asyncio.wait_for(consume(), 15)
    assert info.value.status_code == 410


async def test_informer_relists_after_a_real_gone(
    control_plane: Any, kube: kclient.KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await kube.create(kclient.EVENTS, event_body("e1", ns), namespace=ns)
    inf = kinformer.Informer(kube, kclient.EVENTS, namespace=ns, watch_timeout=2)
    task = asyncio.create_task(inf.run(), name="informer/e2e-events")
    try:
        assert await inf.wait_for_sync(10)
        await kube.create(kclient.EVENTS, event_body("e2", ns), namespace=ns)
        # Two writes the events watch does not see, so its resourceVersion gets compacted away.
        for name in ("bump-1", "bump-2"):
            await kube.create(kclient.CONFIGMAPS, configmap(name), namespace=ns)
        await compact_etcd(control_plane.etcd_url)
        # The running watch ends (timeoutSeconds <= 4); the next one gets 410 and it relists.
        await wait_until(lambda: inf.list_count >= 2, 15)
        await kube.create(kclient.EVENTS, event_body("e3", ns), namespace=ns)
        await wait_until(lambda: len(inf) == 3)
        assert sorted(inf.keys()) == [f"{ns}/e1", f"{ns}/e2", f"{ns}/e3"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class DroppingClient(kclient.KubeClient):
    """Its first watch hangs until ``drop`` is set, then fails with 410 (events are missed)."""

    drop: asyncio.Event
    dropped = False

    async def watch(  # type: ignore[override]
        self, res: kclient.Resource, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        if not self.dropped:
            self.dropped = True
            await self.drop.wait()
            raise errors.GoneError("too old resource version (injected)", status=410)
        async with contextlib.aclosing(super().watch(res, **kwargs)) as stream:
            async for event in stream:
                yield event


async def test_informer_relists_after_gone_and_converges(
    control_plane: Any, kube: kclient.KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    for name in ("a", "b", "c"):
        await kube.create(kclient.CONFIGMAPS, configmap(name, app="x"), namespace=ns)
    flaky = await DroppingClient.connect(kubeconfig=str(control_plane.kubeconfig_path))
    flaky.drop = asyncio.Event()
    inf = kinformer.Informer(flaky, kclient.CONFIGMAPS, namespace=ns, label_selector="app=x")
    handled: list[tuple[str, str]] = []
    inf.add_handler(
        on_add=lambda o: handled.append(("add", o["metadata"]["name"])),
        on_update=lambda old, new: handled.append(("update", new["metadata"]["name"])),
        on_delete=lambda o: handled.append(("delete", o["metadata"]["name"])),
    )
    task = asyncio.create_task(inf.run(), name="informer/e2e")
    try:
        assert await inf.wait_for_sync(10)
        assert sorted(handled) == [("add", "a"), ("add", "b"), ("add", "c")]
        handled.clear()
        # Changes the (hanging) watch never delivers:
        await kube.delete(kclient.CONFIGMAPS, "b", namespace=ns)
        await kube.create(kclient.CONFIGMAPS, configmap("d", app="x"), namespace=ns)
        await kube.patch(kclient.CONFIGMAPS, "a", {"data": {"k": "changed"}}, namespace=ns)
        flaky.drop.set()
        await wait_until(lambda: len(handled) == 3)
        assert sorted(handled) == [("add", "d"), ("delete", "b"), ("update", "a")]
        assert inf.list_count == 2
        # The new watch (from the relist's resourceVersion) carries on.
        await kube.delete(kclient.CONFIGMAPS, "c", namespace=ns)
        await wait_until(lambda: ("delete", "c") in handled)
        items, _ = await kube.list_all(kclient.CONFIGMAPS, namespace=ns, label_selector="app=x")
        assert sorted(inf.keys()) == sorted(f"{ns}/{i['metadata']['name']}" for i in items)
        cached = inf.get(f"{ns}/a")
        assert cached is not None
        assert cached["data"] == {"k": "changed"}
        assert "managedFields" not in cached["metadata"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await flaky.aclose()


async def test_strategic_merge_patch_of_node_status(
    kube: kclient.KubeClient, unique_name: Callable[..., str]
) -> None:
    name = unique_name("node")
    await kube.create(
        kclient.NODES,
        {
            "metadata": {"name": name, "labels": {"a": "1"}},
            "spec": {"taints": [{"key": "t", "effect": "NoSchedule"}]},
        },
    )
    try:
        await kube.patch(
            kclient.NODES,
            name,
            {
                "status": {
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                    "conditions": [
                        {"type": "Ready", "status": "False", "reason": "Starting"},
                        {"type": "MemoryPressure", "status": "False", "reason": "Fine"},
                    ],
                }
            },
            subresource="status",
        )
        patched = await kube.patch(
            kclient.NODES,
            name,
            {
                "status": {
                    "addresses": [{"type": "ExternalIP", "address": "203.0.113.7"}],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Up"}],
                },
                "metadata": {"labels": {"ignored": "by-status"}},
            },
            subresource="status",
        )
        addresses = {a["type"]: a["address"] for a in patched["status"]["addresses"]}
        assert addresses == {"InternalIP": "10.0.0.1", "ExternalIP": "203.0.113.7"}
        conditions = {c["type"]: c["status"] for c in patched["status"]["conditions"]}
        assert conditions == {"Ready": "True", "MemoryPressure": "False"}
        # A main-resource patch replaces taints (no merge key) and leaves status alone.
        main = await kube.patch(
            kclient.NODES,
            name,
            {"spec": {"taints": [{"key": "u", "effect": "NoExecute"}]}, "status": {"phase": "x"}},
        )
        assert main["spec"]["taints"] == [{"key": "u", "effect": "NoExecute"}]
        assert main["status"]["addresses"] == patched["status"]["addresses"]
        assert "phase" not in main["status"]
    finally:
        await kube.delete(kclient.NODES, name)


async def test_api_errors_are_translated(kube: kclient.KubeClient, kube_namespace: str) -> None:
    ns = kube_namespace
    with pytest.raises(errors.NotFoundError, match='configmaps "nope" not found'):
        await kube.get(kclient.CONFIGMAPS, "nope", namespace=ns)
    created = await kube.create(kclient.CONFIGMAPS, configmap("dup"), namespace=ns)
    with pytest.raises(errors.AlreadyExistsError):
        await kube.create(kclient.CONFIGMAPS, configmap("dup"), namespace=ns)
    await kube.patch(kclient.CONFIGMAPS, "dup", {"data": {"k": "2"}}, namespace=ns)
    with pytest.raises(errors.ConflictError) as info:
        await kube.replace(kclient.CONFIGMAPS, "dup", created, namespace=ns)
    assert not isinstance(info.value, errors.AlreadyExistsError)
    assert info.value.reason == "Conflict"
    with pytest.raises(errors.InvalidError):
        await kube.patch(
            kclient.CONFIGMAPS,
            "dup",
            [{"op": "test", "path": "/data/k", "value": "wrong"}],
            namespace=ns,
            patch_type="json",
        )
    with pytest.raises(errors.ConflictError, match="precondition"):
        await kube.delete(kclient.CONFIGMAPS, "dup", namespace=ns, preconditions={"uid": "x"})
    with pytest.raises(errors.NotFoundError):
        await kube.delete(kclient.CONFIGMAPS, "nope", namespace=ns)


async def test_delete_with_a_finalizer_returns_the_object(
    kube: kclient.KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    body = configmap("fin")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await kube.create(kclient.CONFIGMAPS, body, namespace=ns)
    pending = await kube.delete(kclient.CONFIGMAPS, "fin", namespace=ns)
    assert pending is not None
    assert pending["metadata"]["deletionTimestamp"]
    await kube.patch(
        kclient.CONFIGMAPS,
        "fin",
        {"metadata": {"finalizers": None}},
        namespace=ns,
        patch_type="merge",
    )
    with pytest.raises(errors.NotFoundError):
        await kube.get(kclient.CONFIGMAPS, "fin", namespace=ns)


async def test_server_side_apply(kube: kclient.KubeClient, kube_namespace: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied"},
        "data": {"a": "1"},
    }
    out = await kube.patch(
        kclient.CONFIGMAPS,
        "applied",
        body,
        namespace=kube_namespace,
        patch_type="apply",
        field_manager="ccm-e2e",
        force=True,
    )
    assert out["data"] == {"a": "1"}
    assert any(m["manager"] == "ccm-e2e" for m in out["metadata"]["managedFields"])


async def test_events_are_created_then_aggregated(
    kube: kclient.KubeClient, kube_namespace: str
) -> None:
    cm = await kube.create(kclient.CONFIGMAPS, configmap("evented"), namespace=kube_namespace)
    recorder = kevents.EventRecorder(kube, component="ccm-e2e", host="e2e-host")
    recorder.event(cm, "Normal", "Tested", "same message")
    recorder.event(cm, "Normal", "Tested", "same message")
    await recorder.aclose(timeout=10)
    items, _ = await kube.list_all(
        kclient.EVENTS,
        namespace=kube_namespace,
        field_selector="involvedObject.name=evented,reason=Tested",
    )
    assert len(items) == 1
    (ev,) = items
    assert ev["count"] == 2
    assert ev["source"] == {"component": "ccm-e2e", "host": "e2e-host"}
    assert ev["involvedObject"]["kind"] == "ConfigMap"
    assert ev["involvedObject"]["uid"] == cm["metadata"]["uid"]


async def test_request_reaches_non_resource_paths(kube: kclient.KubeClient) -> None:
    assert await kube.request("GET", "/healthz") == "ok"
    version = await kube.request("GET", "/version")
    assert version["major"] == "1"


async def test_a_bad_kubeconfig_raises_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nclusters: [\n")
    with pytest.raises(errors.ConfigError, match=f"kubeconfig {broken}: not valid YAML"):
        await kclient.KubeClient.connect(kubeconfig=str(broken))


async def test_an_untrusted_server_certificate_is_a_kube_error(
    control_plane: Any, tmp_path: Path
) -> None:
    # The admin kubeconfig, minus the CA that signed the apiserver's certificate.
    import yaml

    cfg = yaml.safe_load(control_plane.kubeconfig_path.read_bytes())
    for cluster in cfg["clusters"]:
        cluster["cluster"].pop("certificate-authority-data", None)
        cluster["cluster"].pop("certificate-authority", None)
    path = tmp_path / "untrusted"
    path.write_bytes(orjson.dumps(cfg))
    async with await kclient.KubeClient.connect(kubeconfig=str(path), request_timeout=5) as kube:
        with pytest.raises(errors.KubeError, match="certificate") as info:
            await kube.get(kclient.NAMESPACES, "default")
    assert not isinstance(info.value, errors.ApiError)
