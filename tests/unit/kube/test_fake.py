"""FakeKubeClient: the in-memory apiserver behaves like the real one where controllers care."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube import fake

pytestmark = pytest.mark.looptime


def node(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **extra.pop("metadata", {})}, **extra}


async def test_create_assigns_identity_and_increasing_resource_versions() -> None:
    kube = fake.FakeKubeClient()
    a = await kube.create(kclient.NODES, node("a"))
    b = await kube.create(kclient.NODES, node("b"))
    assert a["kind"] == "Node"
    assert a["apiVersion"] == "v1"
    assert a["metadata"]["uid"]
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert a["metadata"]["creationTimestamp"].endswith("Z")
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert kube.actions == [("create", "nodes", "a", None), ("create", "nodes", "b", None)]


async def test_create_with_generate_name_gets_a_unique_name() -> None:
    kube = fake.FakeKubeClient()
    body = {"metadata": {"generateName": "ev-", "namespace": "default"}}
    one = await kube.create(kclient.EVENTS, body)
    two = await kube.create(kclient.EVENTS, body)
    assert one["metadata"]["name"].startswith("ev-")
    assert one["metadata"]["name"] != two["metadata"]["name"]


async def test_get_of_a_missing_object_raises_not_found() -> None:
    kube = fake.FakeKubeClient()
    with pytest.raises(errors.NotFoundError, match='nodes "nope" not found') as info:
        await kube.get(kclient.NODES, "nope")
    assert info.value.reason == "NotFound"
    assert info.value.status_code == 404


async def test_creating_an_existing_object_raises_already_exists() -> None:
    kube = fake.FakeKubeClient()
    await kube.create(kclient.SERVICES, {"metadata": {"name": "s", "namespace": "ns"}})
    with pytest.raises(errors.AlreadyExistsError):
        await kube.create(kclient.SERVICES, {"metadata": {"name": "s"}}, namespace="ns")
    # Same name, other namespace: fine.
    await kube.create(kclient.SERVICES, {"metadata": {"name": "s"}}, namespace="other")


async def test_replace_with_a_stale_resource_version_conflicts() -> None:
    kube = fake.FakeKubeClient()
    created = await kube.create(kclient.CONFIGMAPS, {"metadata": {"name": "c", "namespace": "n"}})
    first = dict(created, data={"k": "1"})
    updated = await kube.replace(kclient.CONFIGMAPS, "c", first)
    assert updated["data"] == {"k": "1"}
    stale = dict(created, data={"k": "2"})
    with pytest.raises(errors.ConflictError) as info:
        await kube.replace(kclient.CONFIGMAPS, "c", stale)
    assert not isinstance(info.value, errors.AlreadyExistsError)
    # Without a resourceVersion the update is unconditional.
    stale["metadata"] = {k: v for k, v in stale["metadata"].items() if k != "resourceVersion"}
    assert (await kube.replace(kclient.CONFIGMAPS, "c", stale))["data"] == {"k": "2"}


async def test_a_no_op_write_keeps_the_resource_version() -> None:
    kube = fake.FakeKubeClient()
    created = await kube.create(kclient.NODES, node("a", metadata={"labels": {"x": "1"}}))
    patched = await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"x": "1"}}})
    assert patched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_returned_objects_are_copies() -> None:
    kube = fake.FakeKubeClient()
    got = await kube.create(kclient.NODES, node("a"))
    got["metadata"]["labels"] = {"mutated": "yes"}
    assert "labels" not in (await kube.get(kclient.NODES, "a"))["metadata"]


async def test_strategic_merge_patch_merges_labels_conditions_addresses_and_replaces_taints() -> (
    None
):
    kube = fake.FakeKubeClient()
    kube.put_object(
        kclient.NODES,
        node(
            "n",
            metadata={"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            spec={"taints": [{"key": "t1", "effect": "NoSchedule"}, {"key": "t2"}]},
            status={
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "MemoryPressure", "status": "False"},
                ],
            },
        ),
    )
    await kube.patch(
        kclient.NODES,
        "n",
        {
            "metadata": {"labels": {"b": None, "c": "3"}, "finalizers": ["y"]},
            "spec": {"taints": [{"key": "t2"}]},
        },
    )
    await kube.patch(
        kclient.NODES,
        "n",
        {
            "status": {
                "addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        subresource="status",
    )
    stored = kube.get_object(kclient.NODES, "n")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"a": "1", "c": "3"}
    assert stored["metadata"]["finalizers"] == ["x", "y"]
    assert stored["spec"]["taints"] == [{"key": "t2"}]
    assert stored["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.1"},
        {"type": "ExternalIP", "address": "1.2.3.4"},
    ]
    assert stored["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "MemoryPressure", "status": "False"},
    ]


async def test_strategic_merge_patch_directives() -> None:
    obj: dict[str, Any] = {
        "metadata": {"finalizers": ["a", "b", "c"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "Hostname", "address": "h"},
            ]
        },
        "spec": {"m": {"x": 1, "y": 2}},
    }
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]},
        "status": {
            "addresses": [{"type": "Hostname", "$patch": "delete"}],
            "$setElementOrder/addresses": [{"type": "InternalIP"}],
        },
        "spec": {"m": {"$patch": "replace", "z": 3}},
    }
    out = fake.apply_strategic_merge_patch(obj, patch)
    assert out["metadata"]["finalizers"] == ["a", "c"]
    assert out["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.1"}]
    assert out["spec"]["m"] == {"z": 3}
    assert obj["metadata"]["finalizers"] == ["a", "b", "c"]  # the input is untouched


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    out = fake.apply_merge_patch(
        {"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 4}, "l": [3]}
    )
    assert out == {"a": {"c": 2, "d": 4}, "l": [3]}


def test_json_patch_operations() -> None:
    doc = {"metadata": {"labels": {"a/b": "1"}}, "spec": {"taints": [{"key": "x"}]}}
    out = fake.apply_json_patch(
        doc,
        [
            {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
            {"op": "add", "path": "/spec/taints/-", "value": {"key": "y"}},
            {"op": "replace", "path": "/spec/taints/0/key", "value": "z"},
            {"op": "copy", "from": "/spec/taints/1", "path": "/spec/first"},
            {"op": "move", "from": "/metadata/labels/a~1b", "path": "/metadata/labels/c"},
            {"op": "remove", "path": "/spec/taints/1"},
        ],
    )
    assert out == {
        "metadata": {"labels": {"c": "1"}},
        "spec": {"taints": [{"key": "z"}], "first": {"key": "y"}},
    }


async def test_a_failed_json_patch_test_is_invalid() -> None:
    kube = fake.FakeKubeClient()
    await kube.create(kclient.NODES, node("n"))
    with pytest.raises(errors.InvalidError):
        await kube.patch(
            kclient.NODES,
            "n",
            [{"op": "test", "path": "/metadata/name", "value": "other"}],
            patch_type="json",
        )


async def test_a_patch_carrying_a_stale_resource_version_conflicts() -> None:
    kube = fake.FakeKubeClient()
    created = await kube.create(kclient.NODES, node("n"))
    await kube.patch(kclient.NODES, "n", {"metadata": {"labels": {"a": "1"}}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    with pytest.raises(errors.ConflictError):
        await kube.patch(kclient.NODES, "n", stale, patch_type="merge")


async def test_main_writes_keep_status_and_status_writes_keep_the_rest() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("n", spec={"podCIDR": "a"}, status={"phase": "x"}))
    await kube.patch(kclient.NODES, "n", {"spec": {"podCIDR": "b"}, "status": {"phase": "y"}})
    stored = kube.get_object(kclient.NODES, "n")
    assert stored is not None
    assert stored["spec"]["podCIDR"] == "b"
    assert stored["status"]["phase"] == "x"
    await kube.patch(
        kclient.NODES,
        "n",
        {"spec": {"podCIDR": "c"}, "status": {"phase": "z"}},
        subresource="status",
    )
    stored = kube.get_object(kclient.NODES, "n")
    assert stored is not None
    assert stored["spec"]["podCIDR"] == "b"
    assert stored["status"]["phase"] == "z"
    # Leases have no status subresource.
    with pytest.raises(errors.NotFoundError):
        await kube.patch(kclient.LEASES, "l", {}, namespace="ns", subresource="status")


async def test_status_writes_keep_metadata_changes_as_the_apiserver_does() -> None:
    """Finalizers and labels written through ``services/status`` are kept; spec is not."""
    kube = fake.FakeKubeClient()
    await kube.create(
        kclient.SERVICES,
        {"metadata": {"name": "s", "namespace": "ns"}, "spec": {"type": "LoadBalancer"}},
    )
    await kube.patch(
        kclient.SERVICES,
        "s",
        {
            "metadata": {
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
                "labels": {"a": "1"},
            },
            "spec": {"type": "ClusterIP"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
        },
        namespace="ns",
        subresource="status",
    )
    stored = kube.get_object(kclient.SERVICES, "s", "ns")
    assert stored is not None
    assert stored["metadata"]["finalizers"] == ["service.kubernetes.io/load-balancer-cleanup"]
    assert stored["metadata"]["labels"] == {"a": "1"}
    assert stored["spec"]["type"] == "LoadBalancer"
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1"}]


async def test_delete_with_finalizers_waits_for_them() -> None:
    kube = fake.FakeKubeClient()
    await kube.create(
        kclient.SERVICES,
        {"metadata": {"name": "s", "namespace": "ns", "finalizers": ["service.kubernetes.io/lb"]}},
    )
    pending = await kube.delete(kclient.SERVICES, "s", namespace="ns")
    assert pending is not None
    assert pending["metadata"]["deletionTimestamp"]
    with pytest.raises(errors.InvalidError, match="no new finalizers"):
        await kube.patch(kclient.SERVICES, "s", {"metadata": {"finalizers": ["x"]}}, namespace="ns")
    await kube.patch(
        kclient.SERVICES,
        "s",
        [{"op": "remove", "path": "/metadata/finalizers"}],
        namespace="ns",
        patch_type="json",
    )
    assert kube.get_object(kclient.SERVICES, "s", "ns") is None


async def test_delete_without_finalizers_removes_and_preconditions_are_checked() -> None:
    kube = fake.FakeKubeClient()
    created = await kube.create(kclient.NODES, node("n"))
    with pytest.raises(errors.ConflictError, match="Precondition"):
        await kube.delete(kclient.NODES, "n", preconditions={"uid": "other"})
    assert (
        await kube.delete(kclient.NODES, "n", preconditions={"uid": created["metadata"]["uid"]})
        is None
    )
    with pytest.raises(errors.NotFoundError):
        await kube.delete(kclient.NODES, "n")


async def test_label_and_field_selectors_filter_lists() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a", metadata={"labels": {"role": "x", "zone": "1"}}))
    kube.put_object(kclient.NODES, node("b", metadata={"labels": {"role": "y"}}))
    kube.put_object(kclient.NODES, node("c", spec={"unschedulable": True}))

    async def names(**kw: Any) -> list[str]:
        page = await kube.list(kclient.NODES, **kw)
        return [i["metadata"]["name"] for i in page["items"]]

    assert await names(label_selector="role=x") == ["a"]
    assert await names(label_selector="role!=x") == ["b", "c"]
    assert await names(label_selector="role in (x, y),!zone") == ["b"]
    assert await names(label_selector="role notin (x)") == ["b", "c"]
    assert await names(label_selector="zone") == ["a"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="spec.unschedulable==true") == ["c"]
    assert await names(field_selector="spec.unschedulable!=true") == ["a", "b"]


async def test_paged_lists_and_list_all() -> None:
    kube = fake.FakeKubeClient()
    for i in range(7):
        kube.put_object(kclient.NODES, node(f"n{i}"))
    page = await kube.list(kclient.NODES, limit=3)
    assert len(page["items"]) == 3
    assert page["metadata"]["continue"]
    assert page["metadata"]["remainingItemCount"] == 4
    assert "kind" not in page["items"][0]  # like the apiserver: items carry no type
    items, rv = await kube.list_all(kclient.NODES, page_size=3)
    assert [i["metadata"]["name"] for i in items] == [f"n{i}" for i in range(7)]
    assert items[0]["kind"] == "Node"
    assert rv == str(kube.server.resource_version)
    assert [a.verb for a in kube.actions] == ["list"] * 4


async def test_list_all_falls_back_to_one_unpaged_list_when_the_continue_token_expires() -> None:
    kube = fake.FakeKubeClient()
    for i in range(4):
        kube.put_object(kclient.NODES, node(f"n{i}"))
    first = await kube.list(kclient.NODES, limit=2)
    kube.put_object(kclient.CONFIGMAPS, {"metadata": {"name": "bump", "namespace": "n"}})
    kube.server.compact()
    with pytest.raises(errors.GoneError):
        await kube.list(kclient.NODES, limit=2, continue_token=first["metadata"]["continue"])

    real_list = kube.list
    calls: list[int | None] = []

    async def compacting_list(res: kclient.Resource, **kw: Any) -> dict[str, Any]:
        calls.append(kw.get("limit"))
        page = await real_list(res, **kw)
        kube.put_object(kclient.CONFIGMAPS, {"metadata": {"name": "bump", "namespace": "n"}})
        kube.server.compact()  # every continue token is now too old
        return page

    kube.list = compacting_list  # type: ignore[method-assign]
    items, _ = await kube.list_all(kclient.NODES, page_size=2)
    assert len(items) == 4
    assert calls == [2, 2, None]


async def test_watch_streams_writes_and_ends_at_its_timeout() -> None:
    kube = fake.FakeKubeClient()
    created = await kube.create(kclient.NODES, node("a"))
    rv = created["metadata"]["resourceVersion"]
    events: list[tuple[str, str]] = []

    async def consume() -> None:
        async for ev in kube.watch(kclient.NODES, resource_version=rv, timeout_seconds=60):
            events.append((ev["type"], ev["object"]["metadata"]["name"]))

    task = asyncio.create_task(consume())
    await asyncio.sleep(1)
    await kube.create(kclient.NODES, node("b"))
    await kube.patch(kclient.NODES, "b", {"metadata": {"labels": {"x": "y"}}})
    await kube.delete(kclient.NODES, "b")
    await asyncio.wait_for(task, 120)  # ends by itself after timeoutSeconds
    assert events == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "b")]
    assert kube.server.watch_count == 0


async def test_watch_replays_history_after_its_resource_version() -> None:
    kube = fake.FakeKubeClient()
    start = await kube.create(kclient.NODES, node("a"))
    await kube.create(kclient.NODES, node("b"))
    await kube.delete(kclient.NODES, "a")
    got = []
    async with contextlib.aclosing(
        kube.watch(kclient.NODES, resource_version=start["metadata"]["resourceVersion"])
    ) as events:
        async for ev in events:
            got.append((ev["type"], ev["object"]["metadata"]["name"]))
            if len(got) == 2:
                break
    assert got == [("ADDED", "b"), ("DELETED", "a")]


async def test_watch_from_a_compacted_resource_version_raises_gone() -> None:
    kube = fake.FakeKubeClient()
    first = await kube.create(kclient.NODES, node("a"))
    await kube.create(kclient.NODES, node("b"))
    kube.server.compact()
    rv = first["metadata"]["resourceVersion"]
    with pytest.raises(errors.GoneError, match="too old resource version"):
        async for _ in kube.watch(kclient.NODES, resource_version=rv):
            pass
    # Watching from the compaction point itself is fine.
    current = str(kube.server.resource_version)
    async with contextlib.aclosing(
        kube.watch(kclient.NODES, resource_version=current, timeout_seconds=5)
    ) as events:
        assert [e async for e in events] == []


async def test_watch_with_a_selector_sees_objects_enter_and_leave() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    got = []

    async def consume() -> None:
        async for ev in kube.watch(
            kclient.NODES,
            resource_version=str(kube.server.resource_version),
            label_selector="pick=yes",
        ):
            got.append(ev["type"])

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"pick": "yes"}}})
    await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"other": "1"}}})
    await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"pick": None}}})
    await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"other": "2"}}})
    kube.server.close_watches()
    await task
    assert got == ["ADDED", "MODIFIED", "DELETED"]


async def test_bookmarks_and_error_events() -> None:
    kube = fake.FakeKubeClient()
    got = []

    async def consume() -> None:
        async for ev in kube.watch(kclient.NODES, resource_version="0"):
            got.append(ev)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    kube.put_object(kclient.NODES, node("a"))
    kube.server.send_bookmarks()
    kube.server.close_watches(errors.ServerError("boom", status=500))
    with pytest.raises(errors.ServerError, match="boom"):
        await task
    assert [e["type"] for e in got] == ["ADDED", "BOOKMARK"]
    assert got[1]["object"]["metadata"]["resourceVersion"] == str(kube.server.resource_version)


async def test_injected_errors_are_translated_like_real_ones() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("n"))
    kube.inject_error("patch", "nodes", 409, times=1)
    with pytest.raises(errors.ConflictError):
        await kube.patch(kclient.NODES, "n", {"metadata": {"labels": {"a": "b"}}})
    await kube.patch(kclient.NODES, "n", {"metadata": {"labels": {"a": "b"}}})  # only once
    kube.inject_error("get", "*", errors.KubeError("connection refused"))
    with pytest.raises(errors.KubeError, match="connection refused"):
        await kube.get(kclient.NODES, "n")
    kube.clear_errors()
    kube.inject_error("patch", "nodes", errors.ServerError("etcd down", status=503), subresource="")
    await kube.patch(kclient.NODES, "n", {"status": {"phase": "x"}}, subresource="status")
    with pytest.raises(errors.ServerError, match="etcd down"):
        await kube.patch(kclient.NODES, "n", {"metadata": {"labels": {"c": "d"}}})
    assert kube.writes()[-1] == ("patch", "nodes", "n", None)


async def test_reactors_answer_virtual_resources() -> None:
    kube = fake.FakeKubeClient()
    review = await kube.create(kclient.TOKENREVIEWS, {"spec": {"token": "t"}})
    assert review["status"] == {"authenticated": False}

    def authenticate(req: fake.FakeRequest) -> dict[str, Any]:
        return {**req.body, "status": {"authenticated": True, "user": {"username": "u"}}}

    kube.add_reactor("create", "tokenreviews", authenticate)
    review = await kube.create(kclient.TOKENREVIEWS, {"spec": {"token": "t"}})
    assert review["status"]["authenticated"] is True
    sar = await kube.create(kclient.SUBJECTACCESSREVIEWS, {"spec": {}})
    assert sar["status"]["allowed"] is True


async def test_service_account_token_subresource() -> None:
    kube = fake.FakeKubeClient()
    await kube.create(kclient.SERVICEACCOUNTS, {"metadata": {"name": "sa", "namespace": "ks"}})
    token = await kube.create(
        kclient.SERVICEACCOUNTS,
        {"spec": {"expirationSeconds": 600}},
        namespace="ks",
        name="sa",
        subresource="token",
    )
    assert token["status"]["token"]
    assert kube.actions[-1] == ("create", "serviceaccounts", "sa", "token")


async def test_for_component_shares_the_store_and_sets_the_user_agent() -> None:
    kube = fake.FakeKubeClient(user_agent="ccm/v1")
    node_client = kube.for_component("node-controller")
    await node_client.create(kclient.NODES, node("n"))
    assert kube.get_object(kclient.NODES, "n") is not None
    assert kube.requests[-1].user_agent == "ccm/v1/node-controller"
    assert node_client.requests_total["create"] == 1
    assert kube.requests_total["create"] == 0
    assert kube.all_requests_total["create"] == 1
    await node_client.aclose()  # a derived client does not close the shared transport
    await kube.get(kclient.NODES, "n")


async def test_non_resource_paths() -> None:
    kube = fake.FakeKubeClient()
    assert await kube.request("GET", "/healthz") == "ok"
    assert (await kube.request("GET", "/version"))["major"] == "1"
    with pytest.raises(errors.NotFoundError):
        await kube.request("GET", "/nope")
