"""The daemon runner of the testing kit starts one process per Daemon, however it is entered."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm.testing.daemon import Daemon, DaemonError

# A daemon that never gets healthy: no apiserver answers on this port, and it waits 10 s for one.
ARGS = ["--master=https://127.0.0.1:9", "--leader-elect=false"]


def test_entering_a_started_daemon_does_not_start_a_second_process(tmp_path: Path) -> None:
    daemon = Daemon(ARGS, log_dir=tmp_path)
    with daemon.start(wait_healthy=False):
        assert daemon.process is not None
        first = daemon.process.pid
        with pytest.raises(DaemonError, match="already running"):
            daemon.start(wait_healthy=False)
        assert daemon.process.pid == first
    assert not daemon.running
