"""Shared test configuration. The control-plane fixtures come from the ``ccm`` pytest plugin
(``ccm.testing.pytest_plugin``, registered as a ``pytest11`` entry point)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

_E2E = Path(__file__).parent / "e2e"
_MAIN_LOOP = pytest.StashKey[asyncio.AbstractEventLoop]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Give the main thread an event loop for the whole session, closed at its end. Without one,
    looptime's hook asks the policy for the current loop during a synchronous test, and Python
    3.11 then creates one that nobody closes (a ResourceWarning when it is collected, tests
    later). pytest-asyncio runs each async test on its own loop and puts this one back after."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    session.config.stash[_MAIN_LOOP] = loop


def pytest_sessionfinish(session: pytest.Session) -> None:
    loop = session.config.stash.get(_MAIN_LOOP, None)
    if loop is not None:
        asyncio.set_event_loop(None)
        loop.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/e2e as ``e2e``, so ``-m "not e2e"`` selects the fast tests."""
    for item in items:
        if _E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)
