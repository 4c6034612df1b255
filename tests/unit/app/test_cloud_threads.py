"""``--cloud-threads`` and the daemon's pool for blocking SDK calls: sized by the flag (or from the
workers), installed before the provider is built, shut down after the provider's ``aclose``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccm.app import main, options
from ccm.cloudprovider import (
    BlockingPool,
    CloudProvider,
    current_pool,
    register,
    run_blocking,
    unregister,
)
from ccm.errors import ConfigError


def test_cloud_threads_default_follows_the_workers() -> None:
    opts = options.parse_args(
        ["--cloud-provider=x", "--concurrent-node-syncs=3", "--concurrent-service-syncs=5"]
    )
    assert opts.cloud_threads == 0
    assert opts.cloud_thread_count() == 3 + 5 + 4
    assert options.parse_args(["--cloud-provider=x"]).cloud_thread_count() == 10 + 20 + 4


def test_cloud_threads_flag_sets_the_pool_size() -> None:
    opts = options.parse_args(["--cloud-provider=x", "--cloud-threads=7"])
    assert opts.cloud_thread_count() == 7


def test_negative_cloud_threads_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--cloud-threads must be >= 0"):
        options.parse_args(["--cloud-provider=x", "--cloud-threads=-1"])


class _Provider(CloudProvider):
    name = "pool-probe"

    def __init__(self, seen: dict[str, Any]) -> None:
        self.seen = seen

    async def aclose(self) -> None:
        pool = current_pool()
        self.seen["pool at aclose"] = pool
        self.seen["pool closed at aclose"] = pool.closed
        self.seen["aclose thread"] = await run_blocking(lambda: threading.current_thread().name)


@pytest.fixture
def seen() -> Iterator[dict[str, Any]]:
    seen: dict[str, Any] = {}

    async def factory(config: bytes | None) -> _Provider:
        seen["factory thread"] = await run_blocking(lambda: threading.current_thread().name)
        seen["pool at init"] = current_pool()
        return _Provider(seen)

    register("pool-probe", factory)
    yield seen
    unregister("pool-probe")


def test_daemon_owns_the_pool_from_provider_init_to_after_its_aclose(
    seen: dict[str, Any], tmp_path: Path
) -> None:
    # The daemon stops at the missing kubeconfig, after the provider was built.
    code = main.run(
        [
            "--cloud-provider=pool-probe",
            "--cloud-threads=3",
            f"--kubeconfig={tmp_path / 'missing'}",
            "--allow-untagged-cloud",
        ]
    )
    assert code == 1
    pool = seen["pool at init"]
    assert isinstance(pool, BlockingPool)
    assert pool.name == "ccm-cloud" and pool.max_threads == 3
    assert seen["factory thread"].startswith("ccm-cloud-")
    assert seen["pool at aclose"] is pool
    assert seen["pool closed at aclose"] is False  # the provider can still use it in aclose
    assert seen["aclose thread"].startswith("ccm-cloud-")
    assert pool.closed  # and the daemon shut it down afterwards
    assert pool.threads == 0
    assert current_pool() is not pool
