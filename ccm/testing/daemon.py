"""Run the real ``ccm`` daemon as a subprocess, for end-to-end tests, the demo and the conformance
suite.

``Daemon`` starts ``python -m ccm`` with the flags you give (plus a free ``--secure-port`` on
127.0.0.1 unless you set one), writes its log to a file, waits until ``/healthz`` answers, and stops
it with SIGTERM (SIGKILL after a timeout). It never leaves a process behind: the child dies with its
parent (``PR_SET_PDEATHSIG``) and an ``atexit`` hook kills any daemon still running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from ccm.errors import CCMError

__all__ = ["Daemon", "DaemonError", "free_port"]

_RUNNING: set[Daemon] = set()


class DaemonError(CCMError):
    """The daemon did not start, did not become healthy, or did not stop in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)


class Daemon:
    """One ``ccm`` process. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_dir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        name: str = "ccm",
        command: Sequence[str] | None = None,
    ) -> None:
        self.args = list(args)
        if not any(a.startswith("--secure-port") for a in self.args):
            self.args += [f"--secure-port={free_port()}", "--bind-address=127.0.0.1"]
        self.port = int(
            next(a.split("=", 1)[1] for a in self.args if a.startswith("--secure-port="))
        )
        self.name = name
        self.command = list(command or [sys.executable, "-m", "ccm"])
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="ccm-daemon-"))
        self.log_path = self._log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, wait_healthy: bool = True, timeout: float = 60.0) -> Daemon:
        """Start the process (and wait for ``/healthz`` unless ``wait_healthy`` is false). A
        daemon already running is an error: a second process would outlive every ``stop()``."""
        if self.running:
            raise DaemonError(f"{self.name} is already running")
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [*self.command, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log.close()
        _RUNNING.add(self)
        if wait_healthy:
            self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DaemonError(
                    f"{self.name} exited with {self.process.returncode} before it was healthy:\n"
                    + self.tail(30)
                )
            status, _ = self.get("/healthz")
            if status == 200:
                return
            time.sleep(0.1)
        raise DaemonError(f"{self.name} not healthy after {timeout:.0f}s:\n" + self.tail(30))

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; return its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DaemonError(f"{self.name} still running after {timeout:.0f}s") from exc

    def stop(self, *, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        if self.process is None:
            return None
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            return self.process.returncode
        finally:
            _RUNNING.discard(self)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        _RUNNING.discard(self)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Daemon:
        """Start the daemon unless it runs already (``with daemon.start():`` works too); stop it
        on exit."""
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation --------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_lines()[-n:])

    def wait_for_log(self, text: str, *, timeout: float = 30.0) -> str:
        """Wait until a log line contains ``text``; return that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if text in line:
                    return line
            time.sleep(0.1)
        raise DaemonError(
            f"{self.name}: no log line with {text!r} after {timeout:.0f}s:\n" + self.tail(30)
        )

    def get(self, path: str, *, token: str | None = None) -> tuple[int, str]:
        """GET ``https://127.0.0.1:<port><path>`` without verifying the self-signed cert."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return 0, ""


def _kill_all() -> None:
    for daemon in list(_RUNNING):
        with contextlib.suppress(Exception):
            daemon.kill()


atexit.register(_kill_all)


@contextlib.contextmanager
def running(args: Sequence[str], **kwargs: object) -> Iterator[Daemon]:
    """``with running([...]) as d:`` — start, wait healthy, stop."""
    daemon = Daemon(args, **kwargs)  # type: ignore[arg-type]
    try:
        yield daemon.start()
    finally:
        daemon.stop()
