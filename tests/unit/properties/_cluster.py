"""A small in-memory cluster for the controller properties: the fake apiserver
(:mod:`ccm.kube.fake`) holding the given objects, synced Node and Service informers, and an event
recorder; plus :func:`reconcile`, which runs one reconcile call and checks what may escape it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ccm import errors, wellknown
from ccm.kube import client as kclient
from ccm.kube import informer as kinformer
from ccm.kube.fake import FakeKubeClient
from tests.unit.recorder import Recorder

UNINIT = {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}


@dataclass
class Cluster:
    client: FakeKubeClient
    nodes: kinformer.Informer
    services: kinformer.Informer
    recorder: Recorder

    def node(self, name: str) -> dict[str, Any] | None:
        return self.client.get_object(kclient.NODES, name)

    def service(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.client.get_object(kclient.SERVICES, name, namespace)


@asynccontextmanager
async def cluster(
    nodes: Sequence[dict[str, Any]] = (), services: Sequence[dict[str, Any]] = ()
) -> AsyncIterator[Cluster]:
    """The objects stored, both informers listed them (the initial LIST, no watch timing)."""
    client = FakeKubeClient()
    for node in nodes:
        client.put_object(kclient.NODES, node)
    for svc in services:
        client.put_object(kclient.SERVICES, svc)
    informers = [
        kinformer.Informer(client, kclient.NODES),
        kinformer.Informer(client, kclient.SERVICES),
    ]
    tasks = [asyncio.create_task(i.run(), name=f"properties/{i.name}") for i in informers]
    try:
        for informer in informers:
            assert await informer.wait_for_sync(timeout=10)
        yield Cluster(client, informers[0], informers[1], Recorder())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()


async def reconcile(env: Cluster, name: str, call: Awaitable[Any]) -> BaseException | None:
    """Run one reconcile call for object ``name``; return what it raised.

    What may escape: a ``ccm.errors`` type (the retry switch's vocabulary), or another exception
    only after the controller recorded a Warning event on the object (it reported the bad input
    and asks for a retry). Anything else is a controller bug and fails the property.
    """
    before = len(env.recorder.events)
    raised: Exception | None = None
    try:
        await call
    except Exception as exc:
        raised = exc
    if raised is not None and not isinstance(raised, errors.CCMError):
        reported = env.recorder.warnings(name, before)
        assert reported, (
            f"{type(raised).__name__} escaped the controller for {name!r} without a Warning "
            f"event: {raised}"
        )
    return raised


def one_clear_warning(env: Cluster, name: str, since: int, reason: str) -> None:
    """Exactly one Warning event on ``name`` since event ``since``, with ``reason`` and a
    non-empty one-line message."""
    warned = env.recorder.warnings(name, since)
    assert len(warned) == 1, warned
    got_reason, message = warned[0]
    assert got_reason == reason, warned
    assert message.strip(), warned
    assert "\n" not in message, message
