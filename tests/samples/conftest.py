"""Fixtures of the sample tests: the private cloud's API as a process, kubelet-shaped Nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Nodes


@pytest.fixture
def nodes(k8s_admin: Any) -> Iterator[Nodes]:
    """Creates Nodes as a kubelet with --cloud-provider=external would; deletes them after."""
    n = Nodes(k8s_admin)
    try:
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def private_cloud(tmp_path: Path) -> Iterator[Any]:
    """The private cloud's API (``python -m private_cloud.api``) with a VIP pool of 6 addresses."""
    from private_cloud.testing import ApiProcess

    with ApiProcess(tmp_path / "cloud.db", vip_pool="192.0.2.0/29") as api:
        yield api
