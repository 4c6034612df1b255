"""Start-up of the real ``ccm`` daemon: an unreachable apiserver ends it, and ``/readyz`` waits
for the informers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ccm.testing.daemon import Daemon, free_port

from .conftest import FakeCloudFiles

pytestmark = pytest.mark.e2e

#: Upstream waits this long for the apiserver's /healthz before it gives up.
APISERVER_WAIT = 10.0
#: Starting a Python process on a loaded machine: imports, provider, TLS certificate.
PROCESS_START = 20.0


def test_an_unreachable_apiserver_ends_start_up_with_one_line_and_exit_code_1(
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
) -> None:
    closed = free_port()
    daemon = daemon_factory(
        fake_cloud_files(),
        f"--master=https://127.0.0.1:{closed}",
        "--leader-elect=false",
        start=False,
    )
    started = time.monotonic()
    daemon.start(wait_healthy=True, timeout=PROCESS_START)
    # Serving, alive, but not ready: no cache has synced (or ever will).
    status, body = daemon.get("/readyz?verbose")
    assert status != 200, body
    assert "[-]informer-sync failed" in body
    assert daemon.get("/healthz")[0] == 200

    code = daemon.wait(timeout=APISERVER_WAIT + PROCESS_START)
    elapsed = time.monotonic() - started
    assert code == 1, daemon.tail()
    assert elapsed >= APISERVER_WAIT
    # Whatever is said about the apiserver names its address: one line, the fatal one.
    lines = [line for line in daemon.log_lines() if f"127.0.0.1:{closed}" in line]
    assert len(lines) == 1, daemon.tail()
    assert "Failed to wait for apiserver being healthy" in lines[0]
    assert f"127.0.0.1:{closed}/healthz" in lines[0]
    assert "no answer in time" not in lines[0]  # the cause: connection refused
    assert "Traceback" not in daemon.log()


def test_readyz_answers_200_once_the_informers_have_synced(
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(fake_cloud_files(), "--leader-elect=false")
    deadline = time.monotonic() + 30
    status, body = daemon.get("/readyz?verbose")
    while status != 200 and time.monotonic() < deadline:
        assert "[-]informer-sync failed" in body, body
        time.sleep(0.1)
        status, body = daemon.get("/readyz?verbose")
    assert status == 200, body
    assert "[+]informer-sync ok" in body
    daemon.wait_for_log('Started "cloud-node-controller"', timeout=1)
