"""Unit-test guards: a test that leaves asyncio tasks running fails (every task must be owned);
each test starts with a fresh process-wide cloud API budget (no pause left by another test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from ccm.controllers import cloudapi


@pytest.fixture(autouse=True)
def fresh_cloud_api_budget() -> Iterator[cloudapi.CloudAPIBudget]:
    budget = cloudapi.CloudAPIBudget()
    previous = cloudapi.install(budget)
    yield budget
    cloudapi.install(previous)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    for _ in range(3):  # let cancelled tasks finish unwinding
        await asyncio.sleep(0)
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked running tasks: {[t.get_name() for t in leaked]}"
