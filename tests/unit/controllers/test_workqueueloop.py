"""WorkQueueLoop: a worker whose reconciles never suspend still lets the event loop run."""

from __future__ import annotations

import asyncio
import contextlib

from ccm.controllers.base import WorkQueueLoop
from ccm.kube import workqueue


async def test_a_worker_yields_between_keys_even_when_reconciles_never_suspend() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue("test")
    done: list[str] = []

    async def reconcile(key: str) -> None:
        done.append(key)  # no await that suspends: like a Node with nothing to change

    for i in range(1000):
        queue.add(f"k{i}")
    loop = WorkQueueLoop(name="test", queue=queue, reconcile=reconcile, workers=1)
    seen_by_other_task: list[int] = []

    async def other_task() -> None:
        while len(done) < 1000:
            seen_by_other_task.append(len(done))
            await asyncio.sleep(0)

    runner = asyncio.create_task(loop.run())
    await other_task()
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert len(done) == 1000
    # The other task ran many times while the keys were being worked, not once before and after.
    assert len([n for n in seen_by_other_task if 0 < n < 1000]) > 100
