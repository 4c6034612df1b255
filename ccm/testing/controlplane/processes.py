"""The control plane's child processes: spawned so that they never outlive us, stopped by a hook at
exit and on SIGTERM, and the small helpers of their command lines and logs."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ccm import errors

if TYPE_CHECKING:
    from ccm.testing.controlplane.launcher import ControlPlane


_LOG_TAIL_LINES = 30
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------------------------------
# child processes: never left behind


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGKILL the child when its parent dies (Linux ``PR_SET_PDEATHSIG``)."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody would kill us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _Spawner:
    """Forks children from the main thread or from one long-lived daemon thread.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process. A
    child forked from a short-lived worker (``asyncio.to_thread``, an executor shut down with its
    event loop) would be SIGKILLed when that worker ends, so those forks are delegated to a thread
    that lives as long as the process.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def spawn(self, factory: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        if threading.current_thread() is threading.main_thread():
            return factory()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ccm-controlplane-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((factory, future))
        return future.result()

    def _run(self) -> None:
        while True:
            factory, future = self._jobs.get()
            try:
                future.set_result(factory())
            except Exception as exc:
                future.set_exception(exc)


_SPAWNER = _Spawner()
_RUNNING: set[ControlPlane] = set()
_RUNNING_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _stop_all() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for control_plane in running:
        control_plane.stop()


def _install_hooks() -> None:
    """Once per process: an atexit hook, and a SIGTERM handler that chains to the previous one."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; PDEATHSIG still covers us
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _stop_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL, or a handler installed outside Python: die of SIGTERM as we would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


_UNSAFE_NO_FSYNC: dict[Path, bool] = {}


def _etcd_supports_no_fsync(etcd: Path) -> bool:
    if etcd not in _UNSAFE_NO_FSYNC:
        try:
            result = subprocess.run(
                [str(etcd), "--help"], capture_output=True, text=True, timeout=30, check=False
            )
            _UNSAFE_NO_FSYNC[etcd] = "--unsafe-no-fsync" in result.stdout + result.stderr
        except (OSError, subprocess.TimeoutExpired):
            _UNSAFE_NO_FSYNC[etcd] = False
    return _UNSAFE_NO_FSYNC[etcd]


def _free_ports(count: int) -> list[int]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _merge_args(defaults: Mapping[str, str | None], extra: Sequence[str]) -> list[str]:
    merged = dict(defaults)
    for arg in extra:
        if not arg.startswith("--"):
            raise errors.ConfigError(
                f"extra argument {arg!r} must be of the form --flag or --flag=value"
            )
        flag, sep, value = arg.partition("=")
        merged.pop(flag, None)  # re-insert so that overrides come last, as given
        merged[flag] = value if sep else None
    return [flag if value is None else f"{flag}={value}" for flag, value in merged.items()]


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise errors.ConfigError(f"{name}={raw!r} must be positive")
    return value


def _safe_file_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]
    if safe == name:
        return safe
    # Keep distinct users apart once sanitised ("a:b" vs "a_b").
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout``, and reap the leader."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
