"""Unit-test guard: a test that leaves asyncio tasks running fails (every task must be owned)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """A test that leaves asyncio tasks running fails (every task must be owned)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(3):
        await asyncio.sleep(0)
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked running tasks: {[t.get_name() for t in leaked]}"
