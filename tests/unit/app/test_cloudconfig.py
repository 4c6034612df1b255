"""Cloud config reload: a changed --cloud-config goes to the provider's reload hook, or restarts
ccm (exit 0) for a provider without one; a malformed file is refused and the old one serves."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ccm.app import cloudconfig
from ccm.cloudprovider import CloudProvider
from ccm.errors import ConfigError
from ccm.testing.fake_cloud import FakeCloud


class Mounted:
    """A file mounted from a Secret as the kubelet does it: ``cloud.yaml`` → ``..data/cloud.yaml``,
    ``..data`` → a timestamped directory, swapped atomically on each update."""

    def __init__(self, root: Path, data: str) -> None:
        self.root = root
        self.generation = 0
        self.update(data)
        (root / "cloud.yaml").symlink_to("..data/cloud.yaml")

    @property
    def path(self) -> str:
        return str(self.root / "cloud.yaml")

    def update(self, data: str) -> None:
        self.generation += 1
        target = self.root / f"..2026_12_04_{self.generation}"
        target.mkdir()
        (target / "cloud.yaml").write_text(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, self.root / "..data")


def _refused() -> float:
    return cloudconfig.CLOUD_CONFIG_RELOADS.labels("refused")._value.get()


class NoHook(CloudProvider):
    name = "nohook"


async def _never(_data: bytes) -> None:
    raise AssertionError("a provider with a reload hook is never rebuilt")


async def test_a_provider_with_a_hook_gets_the_new_bytes_and_refuses_a_malformed_file(
    tmp_path: Path,
) -> None:
    mounted = Mounted(tmp_path, "defaultInstance: {instanceType: small}\n")
    cloud = FakeCloud.from_config("defaultInstance: {instanceType: small}\n")
    restarts: list[int] = []
    watcher = cloudconfig.ConfigWatcher(
        mounted.path, cloud, check_new=_never, restart=lambda: restarts.append(1)
    )
    await watcher.prime()
    assert await watcher.check() == "unchanged"

    mounted.update("defaultInstance: {instanceType: large}\n")
    assert await watcher.check() == "reloaded"
    assert cloud.default_instance is not None
    assert cloud.default_instance.instance_type == "large"
    assert cloud.config_reloads == 1

    before = _refused()
    mounted.update("defaultInstance: {instanceType: [not, a, string]}\n")
    assert await watcher.check() == "refused"
    assert cloud.default_instance.instance_type == "large"  # the old config keeps serving
    assert cloud.config_reloads == 1
    assert _refused() == before + 1
    assert await watcher.check() == "unchanged"  # not retried until the file changes again
    assert restarts == []


async def test_a_provider_without_a_hook_restarts_once_the_new_file_builds_a_provider(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mounted = Mounted(tmp_path, "good: 1\n")
    checked: list[bytes] = []

    async def check_new(data: bytes) -> None:
        checked.append(data)
        if b"bad" in data:
            raise ConfigError("line 1: bad is not a key")

    restarts: list[int] = []
    watcher = cloudconfig.ConfigWatcher(
        mounted.path, NoHook(), check_new=check_new, restart=lambda: restarts.append(1)
    )
    await watcher.prime()
    mounted.update("bad: 1\n")
    assert await watcher.check() == "refused"
    assert restarts == []
    assert "bad is not a key" in caplog.text
    mounted.update("good: 2\n")
    assert await watcher.check() == "restart"
    assert restarts == [1]
    assert checked == [b"bad: 1\n", b"good: 2\n"]


async def test_an_unreadable_file_is_tried_again_and_is_no_change(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text("a: 1\n")
    restarts: list[int] = []
    watcher = cloudconfig.ConfigWatcher(
        str(path), NoHook(), check_new=_never_fails, restart=lambda: restarts.append(1)
    )
    await watcher.prime()
    path.unlink()
    assert await watcher.check() == "unreadable"
    path.write_text("a: 1\n")
    assert await watcher.check() == "unchanged"
    assert restarts == []


async def _never_fails(_data: bytes) -> None:
    return None


@pytest.mark.looptime
async def test_run_polls_on_the_clock_and_ends_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text("a: 1\n")
    restarts: list[float] = []
    loop = asyncio.get_running_loop()
    watcher = cloudconfig.ConfigWatcher(
        str(path),
        NoHook(),
        check_new=_never_fails,
        restart=lambda: restarts.append(loop.time()),
        interval=5.0,
    )
    await watcher.prime()
    start = loop.time()
    task = asyncio.create_task(watcher.run(), name="test/watch")
    await asyncio.sleep(12)
    assert restarts == []
    path.write_text("a: 2\n")
    async with asyncio.timeout(10):
        await task
    assert [round(t - start) for t in restarts] == [15]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        cloudconfig.ConfigWatcher("x", NoHook(), check_new=_never_fails, restart=list, interval=0)


async def test_the_manager_s_own_error_is_not_wrapped_by_the_watcher_s_task_group(
    tmp_path: Path,
) -> None:
    from ccm.app import main
    from ccm.leaderelection import LeadershipLostError

    path = tmp_path / "cloud.yaml"
    path.write_text("a: 1\n")

    class Manager:
        async def run(self) -> None:
            raise LeadershipLostError("kube-system", "ccm", "lost")

    watcher = cloudconfig.ConfigWatcher(
        str(path), NoHook(), check_new=_never_fails, restart=lambda: None
    )
    with pytest.raises(LeadershipLostError):
        await main._run_manager(Manager(), watcher)  # type: ignore[arg-type]
