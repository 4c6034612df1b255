"""The event recorder: shape of Events, aggregation, bounded queue, failures (looptime)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ccm import errors
from ccm.kube import client as kclient
from ccm.kube import events, fake

pytestmark = pytest.mark.looptime

NODE = {
    "kind": "Node",
    "apiVersion": "v1",
    "metadata": {"name": "node-1", "uid": "u-1", "resourceVersion": "42"},
}
SERVICE = {
    "kind": "Service",
    "apiVersion": "v1",
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-2", "resourceVersion": "7"},
}


@contextlib.asynccontextmanager
async def running(rec: events.EventRecorder) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(rec.run(), name=f"events/{rec.component}")
    try:
        yield task
    finally:
        await rec.aclose(timeout=5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_event_about_a_node_goes_to_the_default_namespace() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="cloud-node-controller", host="host-a")
    async with running(rec):
        rec.event(NODE, "Normal", "Synced", "Node synced successfully")
        await asyncio.sleep(0.1)
    (ev,) = kube.list_objects(kclient.EVENTS)
    assert ev["metadata"]["namespace"] == "default"
    assert ev["metadata"]["name"].startswith("node-1.")
    assert ev["involvedObject"] == {
        "kind": "Node",
        "name": "node-1",
        "uid": "u-1",
        "apiVersion": "v1",
        "resourceVersion": "42",
    }
    assert ev["type"] == "Normal"
    assert ev["reason"] == "Synced"
    assert ev["message"] == "Node synced successfully"
    assert ev["source"] == {"component": "cloud-node-controller", "host": "host-a"}
    assert ev["count"] == 1
    assert ev["firstTimestamp"] == ev["lastTimestamp"]
    assert ev["firstTimestamp"].endswith("Z")


async def test_an_event_about_a_namespaced_object_goes_to_its_namespace() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="service-controller")
    async with running(rec):
        rec.event(SERVICE, "Warning", "SyncLoadBalancerFailed", "boom")
        await asyncio.sleep(0.1)
    (ev,) = kube.list_objects(kclient.EVENTS)
    assert ev["metadata"]["namespace"] == "shop"
    assert ev["involvedObject"]["namespace"] == "shop"
    assert ev["source"] == {"component": "service-controller"}


async def test_identical_events_are_aggregated_by_patching_count() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    async with running(rec):
        for _ in range(3):
            rec.event(NODE, "Normal", "Synced", "same")
            await asyncio.sleep(10)
        rec.event(NODE, "Normal", "Synced", "different message")
        await asyncio.sleep(0.1)
    stored = sorted(kube.list_objects(kclient.EVENTS), key=lambda e: e["message"])
    assert [(e["message"], e["count"]) for e in stored] == [("different message", 1), ("same", 3)]
    assert stored[1]["firstTimestamp"] <= stored[1]["lastTimestamp"]
    assert [a.verb for a in kube.actions] == ["create", "patch", "patch", "create"]
    assert (rec.created, rec.patched) == (2, 2)


async def test_an_identical_event_after_ten_minutes_is_a_new_event() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    async with running(rec):
        rec.event(NODE, "Normal", "Synced", "same")
        await asyncio.sleep(601)
        rec.event(NODE, "Normal", "Synced", "same")
        await asyncio.sleep(0.1)
    assert [a.verb for a in kube.actions] == ["create", "create"]
    assert len(kube.list_objects(kclient.EVENTS)) == 2


async def test_an_expired_event_is_created_again() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    async with running(rec):
        rec.event(NODE, "Normal", "Synced", "same")
        await asyncio.sleep(1)
        (ev,) = kube.list_objects(kclient.EVENTS)
        kube.remove_object(kclient.EVENTS, ev["metadata"]["name"], "default")  # event TTL
        rec.event(NODE, "Normal", "Synced", "same")
        await asyncio.sleep(1)
    assert [a.verb for a in kube.actions] == ["create", "patch", "create"]
    assert len(kube.list_objects(kclient.EVENTS)) == 1


async def test_write_failures_are_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    kube = fake.FakeKubeClient()
    kube.inject_error("create", "events", 403, times=1)
    rec = events.EventRecorder(kube, component="c")
    async with running(rec) as task:
        rec.event(NODE, "Warning", "Failed", "first")
        rec.event(NODE, "Warning", "Failed", "second")
        await asyncio.sleep(1)
        assert not task.done()
    assert rec.failed == 1
    assert [e["message"] for e in kube.list_objects(kclient.EVENTS)] == ["second"]
    assert "Could not create event" in caplog.text


async def test_transient_failures_are_retried() -> None:
    kube = fake.FakeKubeClient()
    kube.inject_error("create", "events", 503, times=2)
    rec = events.EventRecorder(kube, component="c")
    async with running(rec):
        rec.event(NODE, "Normal", "Synced", "x")
        await asyncio.sleep(5)
    assert rec.created == 1
    assert rec.failed == 0
    assert len(kube.list_objects(kclient.EVENTS)) == 1


async def test_a_full_queue_drops_events_without_blocking() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c", queue_size=2)
    for i in range(5):
        rec.event(NODE, "Normal", "R", f"m{i}")  # no sender running: the queue fills up
    assert len(rec) == 2
    assert rec.dropped == 3
    await rec.aclose()
    assert sorted(e["message"] for e in kube.list_objects(kclient.EVENTS)) == ["m0", "m1"]


async def test_aclose_flushes_without_a_running_sender_and_then_drops_new_events() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    rec.event(NODE, "Normal", "A", "a")
    rec.event(SERVICE, "Normal", "B", "b")
    await rec.aclose(timeout=5)
    assert len(kube.list_objects(kclient.EVENTS)) == 2
    rec.event(NODE, "Normal", "C", "c")
    assert len(rec) == 0
    assert rec.dropped == 1


async def test_aclose_lets_the_sender_finish() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    task = asyncio.create_task(rec.run())
    rec.event(NODE, "Normal", "A", "a")
    await rec.aclose(timeout=5)
    await asyncio.wait_for(task, 1)  # run() returned by itself
    assert len(kube.list_objects(kclient.EVENTS)) == 1


async def test_aclose_is_bounded_by_its_timeout() -> None:
    class Hanging(fake.FakeKubeClient):
        async def create(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    rec = events.EventRecorder(Hanging(), component="c")
    rec.event(NODE, "Normal", "A", "a")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await rec.aclose(timeout=2)
    assert loop.time() - start == pytest.approx(2)


async def test_an_event_storm_about_one_object_is_capped() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    async with running(rec):
        for i in range(40):
            rec.event(NODE, "Normal", "R", f"distinct {i}")
        await asyncio.sleep(1)
        assert rec.created == 25
        rec.event(SERVICE, "Normal", "R", "another object is not limited")
        await asyncio.sleep(1)
        assert rec.created == 26


async def test_event_never_raises_even_on_odd_objects() -> None:
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    rec.event({}, "Normal", "R", "no metadata at all")
    rec.event({"metadata": None}, "Normal", "R", "x" * 5000)
    await rec.aclose()
    stored = kube.list_objects(kclient.EVENTS)
    assert len(stored) == 2
    assert max(len(e["message"]) for e in stored) == events.MAX_MESSAGE_LENGTH


async def test_errors_module_is_the_one_raised_by_the_fake() -> None:
    # A guard for the tests above: injected statuses become ccm.errors types.
    kube = fake.FakeKubeClient()
    kube.inject_error("create", "events", 403)
    with pytest.raises(errors.ForbiddenError):
        await kube.create(kclient.EVENTS, {"metadata": {"name": "x", "namespace": "d"}})


async def test_events_are_logged_and_still_sent_with_info_logging_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: the log line's ``extra`` used the key "message", which LogRecord refuses, so
    # with INFO enabled every event was dropped.
    caplog.set_level(logging.INFO, logger="ccm.kube.events")
    kube = fake.FakeKubeClient()
    rec = events.EventRecorder(kube, component="c")
    rec.event(NODE, "Normal", "Synced", "Node synced successfully")
    assert rec.dropped == 0
    await rec.aclose()
    assert len(kube.list_objects(kclient.EVENTS)) == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "Event occurred"]
    assert record.__dict__["note"] == "Node synced successfully"
    assert record.__dict__["object"] == "node-1"
