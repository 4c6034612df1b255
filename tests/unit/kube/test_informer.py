"""The informer over FakeKubeClient: list, watch, relist, handlers, resync (looptime)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube import fake, informer

pytestmark = pytest.mark.looptime


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels)}}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", informer.object_key(obj)))

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", informer.object_key(new)))

    def delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", informer.object_key(obj)))

    def attach(self, inf: informer.Informer) -> Recorder:
        inf.add_handler(on_add=self.add, on_update=self.update, on_delete=self.delete)
        return self


@contextlib.asynccontextmanager
async def running(inf: informer.Informer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(inf.run(), name=f"informer/{inf.name}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def watching(kube: fake.FakeKubeClient) -> None:
    """Wait until the informer's watch is registered on the fake server."""
    for _ in range(1000):
        if kube.server.watch_count:
            return
        await asyncio.sleep(0)
    raise AssertionError("no watch was started")


def test_object_key() -> None:
    assert informer.object_key({"metadata": {"name": "n"}}) == "n"
    assert informer.object_key({"metadata": {"name": "s", "namespace": "ns"}}) == "ns/s"


def test_trim_object_drops_bulk_and_leaves_the_input_alone() -> None:
    obj: dict[str, Any] = {
        "metadata": {
            "name": "n",
            "managedFields": [{"manager": "kubelet"}],
            "annotations": {informer.LAST_APPLIED_ANNOTATION: "{}", "keep": "me"},
        },
        "status": {"images": [{"names": ["x"]}], "addresses": []},
    }
    trimmed = informer.trim_object(obj)
    assert trimmed == {
        "metadata": {"name": "n", "annotations": {"keep": "me"}},
        "status": {"addresses": []},
    }
    assert "managedFields" in obj["metadata"]
    assert "images" in obj["status"]
    lean = {"metadata": {"name": "n"}}
    assert informer.trim_object(lean) is lean


async def test_lists_then_follows_adds_updates_and_deletes() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    kube.put_object(kclient.NODES, node("b"))
    inf = informer.Informer(kube, kclient.NODES, page_size=1)
    rec = Recorder().attach(inf)
    assert not inf.has_synced()
    async with running(inf):
        assert await inf.wait_for_sync(timeout=5)
        assert rec.events == [("add", "a"), ("add", "b")]
        assert len(inf) == 2
        cached = inf.get("a")
        assert cached is not None
        assert cached["kind"] == "Node"
        await kube.create(kclient.NODES, node("c"))
        await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"x": "y"}}})
        await kube.delete(kclient.NODES, "b")
        await settle()
        assert rec.events[2:] == [("add", "c"), ("update", "a"), ("delete", "b")]
        assert sorted(o["metadata"]["name"] for o in inf.list()) == ["a", "c"]
        a = inf.get("a")
        assert a is not None
        assert a["metadata"]["labels"] == {"x": "y"}
    assert [a.verb for a in kube.actions[:3]] == ["list", "list", "watch"]


async def test_stores_trimmed_objects() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(
        kclient.NODES,
        {"metadata": {"name": "a", "managedFields": [{}]}, "status": {"images": [{}]}},
    )
    inf = informer.Informer(kube, kclient.NODES)
    async with running(inf):
        await inf.wait_for_sync(5)
        kube.put_object(
            kclient.NODES,
            {"metadata": {"name": "b", "managedFields": [{}]}, "status": {"images": [{}]}},
        )
        await settle()
        for obj in inf.list():
            assert "managedFields" not in obj["metadata"]
            assert "images" not in obj["status"]


async def test_namespace_and_selectors_limit_the_cache() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.SERVICES, {"metadata": {"name": "a", "namespace": "x"}})
    kube.put_object(kclient.SERVICES, {"metadata": {"name": "b", "namespace": "y"}})
    kube.put_object(
        kclient.SERVICES, {"metadata": {"name": "c", "namespace": "x", "labels": {"l": "1"}}}
    )
    inf = informer.Informer(kube, kclient.SERVICES, namespace="x", label_selector="l=1")
    async with running(inf):
        await inf.wait_for_sync(5)
        assert [o["metadata"]["name"] for o in inf.list()] == ["c"]
        assert inf.get("x/c") is not None


async def test_a_handler_added_late_gets_the_cached_objects() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    inf = informer.Informer(kube, kclient.NODES)
    async with running(inf):
        await inf.wait_for_sync(5)
        rec = Recorder().attach(inf)
        assert rec.events == [("add", "a")]
        await kube.create(kclient.NODES, node("b"))
        await settle()
        assert rec.events == [("add", "a"), ("add", "b")]


async def test_relists_after_gone_and_emits_what_it_missed() -> None:
    kube = fake.FakeKubeClient()
    for name in ("a", "b", "c"):
        kube.put_object(kclient.NODES, node(name))
    inf = informer.Informer(kube, kclient.NODES)
    rec = Recorder().attach(inf)
    async with running(inf):
        await inf.wait_for_sync(5)
        await asyncio.sleep(5)  # a healthy watch for a while
        rec.events.clear()
        # While the watch is down: b vanishes, d appears, a changes, c stays; then compaction.
        assert kube.server.close_watches() == 1
        kube.remove_object(kclient.NODES, "b")
        kube.put_object(kclient.NODES, node("d"))
        kube.put_object(kclient.NODES, node("a", changed="yes"))
        kube.put_object(kclient.NODES, {"metadata": {"name": "bump"}})
        kube.remove_object(kclient.NODES, "bump")
        kube.server.compact()
        await asyncio.sleep(0.1)
        assert inf.list_count == 2
        assert sorted(rec.events) == [("add", "d"), ("delete", "b"), ("update", "a")]
        assert sorted(inf.keys()) == ["a", "c", "d"]
        # And it watches again from the relist.
        await kube.create(kclient.NODES, node("e"))
        await settle()
        assert rec.events[-1] == ("add", "e")


async def test_an_error_event_relists_with_backoff() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    inf = informer.Informer(kube, kclient.NODES, backoff_jitter=0.0)
    loop = asyncio.get_running_loop()
    async with running(inf):
        await inf.wait_for_sync(5)
        await watching(kube)
        start = loop.time()
        kube.server.close_watches(errors.ServerError("internal error", status=500))
        relisted = asyncio.Event()
        inf.add_handler(on_update=lambda old, new: relisted.set())
        kube.remove_object(kclient.NODES, "a")  # unseen: the watch is down
        kube.put_object(kclient.NODES, node("a", new="yes"))
        await asyncio.wait_for(relisted.wait(), 5)
        assert inf.list_count == 2
        assert loop.time() - start == pytest.approx(0.8)


async def test_list_failures_back_off_exponentially_and_never_hot_loop() -> None:
    kube = fake.FakeKubeClient()
    kube.inject_error("list", "nodes", 500, times=4)
    inf = informer.Informer(kube, kclient.NODES, backoff_jitter=0.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with running(inf):
        assert not await inf.wait_for_sync(timeout=5)
        assert await inf.wait_for_sync(timeout=30)
        # 0.8 + 1.6 + 3.2 + 4 (the cap) seconds of back-off before the fifth list succeeds.
        assert loop.time() - start == pytest.approx(9.6, abs=0.01)
    assert [a.verb for a in kube.actions].count("list") == 5


class TimedLists(fake.FakeKubeClient):
    """Records the loop time of every LIST."""

    def __init__(self) -> None:
        super().__init__()
        self.list_times: list[float] = []

    async def list(self, res: kclient.Resource, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        self.list_times.append(asyncio.get_running_loop().time())
        return await super().list(res, **kw)


async def test_after_a_long_outage_the_informer_relists_within_seconds_of_recovery() -> None:
    kube = TimedLists()
    kube.inject_error("list", "nodes", errors.KubeError("connection refused"))
    inf = informer.Informer(kube, kclient.NODES)
    loop = asyncio.get_running_loop()
    async with running(inf):
        await asyncio.sleep(600)  # ten minutes of outage
        assert not inf.has_synced()
        failures = len(kube.list_times)
        gaps = [b - a for a, b in zip(kube.list_times, kube.list_times[1:], strict=False)]
        # Exponential at first, then every attempt within the 4 s cap (jitter only shortens).
        assert gaps[:3] == pytest.approx([0.8, 1.6, 3.2], rel=0.26)
        assert max(gaps) <= 4.0 + 1e-6
        assert min(gaps[3:]) >= 3.0 - 1e-6
        assert failures > 100
        kube.clear_errors()
        recovered = loop.time()
        assert await inf.wait_for_sync(timeout=30)
        assert loop.time() - recovered <= 4.0 + 1e-6


async def test_a_watch_that_closes_immediately_does_not_spin() -> None:
    class EmptyWatch(fake.FakeKubeClient):
        watches = 0

        async def watch(  # type: ignore[override]
            self, res: kclient.Resource, **kw: Any
        ) -> AsyncIterator[dict[str, Any]]:
            EmptyWatch.watches += 1
            for _ in ():
                yield {}

    kube = EmptyWatch()
    inf = informer.Informer(kube, kclient.NODES, backoff_max=5.0)
    async with running(inf):
        await asyncio.sleep(60)
    assert EmptyWatch.watches < 20


async def test_a_watch_ending_normally_resumes_from_its_resource_version() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    inf = informer.Informer(kube, kclient.NODES, watch_timeout=10)
    rec = Recorder().attach(inf)
    async with running(inf):
        await inf.wait_for_sync(5)
        await asyncio.sleep(100)  # several server-side watch timeouts
        await kube.create(kclient.NODES, node("b"))
        await settle()
    assert inf.list_count == 1
    assert inf.watch_count > 3
    assert rec.events == [("add", "a"), ("add", "b")]


async def test_the_revision_grows_with_every_change_of_the_cache_and_only_then() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    inf = informer.Informer(kube, kclient.NODES)
    async with running(inf):
        await inf.wait_for_sync(5)
        await watching(kube)
        seen = [inf.revision]
        await kube.create(kclient.NODES, node("b"))
        await settle()
        seen.append(inf.revision)
        await kube.patch(kclient.NODES, "a", {"metadata": {"labels": {"x": "y"}}})
        await settle()
        seen.append(inf.revision)
        await kube.delete(kclient.NODES, "b")
        await settle()
        seen.append(inf.revision)
        # Neither another resource nor a bookmark changes the cache.
        kube.put_object(kclient.CONFIGMAPS, {"metadata": {"name": "x", "namespace": "n"}})
        kube.server.send_bookmarks()
        await settle()
        seen.append(inf.revision)
    assert seen[0] >= 1  # the first list
    assert seen[0] < seen[1] < seen[2] < seen[3] == seen[4]


async def test_bookmarks_move_the_resource_version() -> None:
    kube = fake.FakeKubeClient()
    inf = informer.Informer(kube, kclient.NODES)
    async with running(inf):
        await inf.wait_for_sync(5)
        await watching(kube)
        kube.put_object(kclient.CONFIGMAPS, {"metadata": {"name": "x", "namespace": "n"}})
        kube.server.send_bookmarks()
        await settle()
        assert inf.last_resource_version == str(kube.server.resource_version)


async def test_handler_exceptions_are_logged_and_do_not_stop_the_informer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = fake.FakeKubeClient()
    inf = informer.Informer(kube, kclient.NODES)

    def broken(obj: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    inf.add_handler(on_add=broken, on_delete=broken)
    rec = Recorder().attach(inf)
    async with running(inf) as task:
        await inf.wait_for_sync(5)
        await kube.create(kclient.NODES, node("a"))
        await kube.delete(kclient.NODES, "a")
        await kube.create(kclient.NODES, node("b"))
        await settle()
        assert not task.done()
    assert rec.events == [("add", "a"), ("delete", "a"), ("add", "b")]
    assert "handler bug" in caplog.text


async def test_resync_calls_update_with_the_same_object() -> None:
    kube = fake.FakeKubeClient()
    kube.put_object(kclient.NODES, node("a"))
    inf = informer.Informer(kube, kclient.NODES, resync_period=30)
    rec = Recorder().attach(inf)
    async with running(inf):
        await inf.wait_for_sync(5)
        await asyncio.sleep(95)
    assert rec.events == [("add", "a")] + [("update", "a")] * 3


async def test_a_large_list_is_paged_by_100_and_dispatched_in_slices() -> None:
    """The initial list of 1,000 objects must not hold the event loop for its whole length: it
    arrives in pages of 100 and its handlers run in slices, with other tasks running between."""
    kube = fake.FakeKubeClient()
    for i in range(1000):
        kube.put_object(kclient.NODES, node(f"n{i:04d}"))
    inf = informer.Informer(kube, kclient.NODES)
    added: list[str] = []
    inf.add_handler(on_add=lambda obj: added.append(informer.object_key(obj)))
    seen_by_other_task: list[int] = []

    async def other_task() -> None:
        while len(added) < 1000:
            seen_by_other_task.append(len(added))
            await asyncio.sleep(0)

    async with running(inf):
        ticker = asyncio.create_task(other_task())
        assert await inf.wait_for_sync(timeout=5)
        await ticker
    lists = [a for a in kube.actions if a.verb == "list"]
    assert len(lists) == 10
    assert len(added) == 1000
    # The other task ran while handlers were being called, not only before or after.
    assert any(0 < n < 1000 for n in seen_by_other_task)


async def test_a_burst_of_watch_events_is_handled_in_slices() -> None:
    """1,000 changes that reach the watch at once must not be applied in one stretch of the loop."""
    kube = fake.FakeKubeClient()
    inf = informer.Informer(kube, kclient.NODES)
    added: list[str] = []
    inf.add_handler(on_add=lambda obj: added.append(informer.object_key(obj)))
    seen_by_other_task: list[int] = []

    async def other_task() -> None:
        while len(added) < 1000:
            seen_by_other_task.append(len(added))
            await asyncio.sleep(0)

    async with running(inf):
        assert await inf.wait_for_sync(timeout=5)
        await watching(kube)
        for i in range(1000):  # no await in between: the events arrive as one burst
            kube.put_object(kclient.NODES, node(f"w{i:04d}"))
        await other_task()
    assert len(added) == 1000
    assert len({n for n in seen_by_other_task if 0 < n < 1000}) >= 5
