"""Shared test configuration. The control-plane fixtures come from the ``ccm`` pytest plugin
(``ccm.testing.pytest_plugin``, registered as a ``pytest11`` entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest

_E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/e2e as ``e2e``, so ``-m "not e2e"`` selects the fast tests."""
    for item in items:
        if _E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)
