"""The control plane: etcd and kube-apiserver launched as child processes, waited for, stopped."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from ccm import certs
from ccm.kube.blocking import BlockingClient
from ccm.testing import assets
from ccm.testing.controlplane.identities import ControlPlaneIdentities
from ccm.testing.controlplane.paths import (
    DEFAULT_AUDIT_POLICY,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlaneError,
    _Layout,
    _PortInUseError,
)
from ccm.testing.controlplane.processes import (
    _LOG_TAIL_LINES,
    _PORT_IN_USE,
    _RUNNING,
    _RUNNING_LOCK,
    _SPAWNER,
    _die_with_parent,
    _env_seconds,
    _etcd_supports_no_fsync,
    _free_ports,
    _install_hooks,
    _merge_args,
    _tail,
    _terminate,
)


class ControlPlane(ControlPlaneIdentities):
    """etcd plus kube-apiserver on 127.0.0.1, started and stopped as child processes.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with ControlPlane() as cp:
            subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig_path, "get", "ns"])

    Paths and URLs are available once started and stay readable after :meth:`stop` (the files are
    gone by then unless ``keep_data_dir``).

    Args:
        assets_dir: folder holding ``kube-apiserver`` and ``etcd``; default
            :func:`ccm.testing.assets.find_assets` (it may build them, outside the start timeout).
        extra_apiserver_args: ``--flag=value`` (or ``--flag``) strings; a flag we set by default is
            replaced, others are appended. E.g. ``["--max-requests-inflight=0"]``.
        extra_etcd_args: the same for etcd.
        env: extra environment variables for both children (on top of ours), e.g. ``GOMAXPROCS``.
        audit_policy: audit policy YAML written to the data dir; ``None`` disables the audit log.
        start_timeout: seconds for both to be ready; default
            ``$CCM_CONTROLPLANE_START_TIMEOUT`` or 60.
        stop_timeout: seconds per process between SIGTERM and SIGKILL; default
            ``$CCM_CONTROLPLANE_STOP_TIMEOUT`` or 10.
        base_dir: where the temporary data dir is created; default the system temp dir.
        keep_data_dir: keep the data dir (logs, certs, etcd data) after :meth:`stop`, for debugging.
    """

    def __init__(
        self,
        *,
        assets_dir: Path | str | None = None,
        extra_apiserver_args: Sequence[str] = (),
        extra_etcd_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        audit_policy: str | None = DEFAULT_AUDIT_POLICY,
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
        base_dir: Path | str | None = None,
        keep_data_dir: bool = False,
    ) -> None:
        self._assets_dir = Path(assets_dir) if assets_dir is not None else None
        self._extra_apiserver_args = tuple(extra_apiserver_args)
        self._extra_etcd_args = tuple(extra_etcd_args)
        self._env = dict(env or {})
        self._audit_policy = audit_policy
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._keep_data_dir = keep_data_dir
        self._layout: _Layout | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._client_ca: certs.KeyPair | None = None
        self._admin_client: BlockingClient | None = None
        self._admin_client_lock = threading.Lock()
        self._pids: list[int] = []
        self._stopping = False
        self.startup_seconds: float | None = None
        """Wall-clock seconds the last successful :meth:`start` took (without any asset build)."""
        self.apiserver_command: list[str] = []
        """The kube-apiserver command line of the last start, for debugging."""
        self.etcd_command: list[str] = []
        """The etcd command line of the last start, for debugging."""

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the children of the last start (etcd first), kept after :meth:`stop`."""
        return tuple(self._pids)

    @property
    def running(self) -> bool:
        """True while both etcd and kube-apiserver are alive."""
        return all(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver; return once ``/readyz`` is 200 and ``default`` exists.

        Raises :class:`ControlPlaneError` (with the failing process's last log lines) on failure or
        timeout, after cleaning up, and :class:`ccm.testing.assets.AssetsError` when binaries are
        missing. Calling it on a running control plane is an error.
        """
        if self._etcd is not None or self._apiserver is not None:
            raise ControlPlaneError("this ControlPlane is already started; stop() it first")
        folder = self._assets_dir or assets.find_assets()
        timeout = self._start_timeout or _env_seconds(
            "CCM_CONTROLPLANE_START_TIMEOUT", DEFAULT_START_TIMEOUT
        )
        started = time.monotonic()
        for attempt in range(3):
            try:
                self._start_once(folder, deadline=time.monotonic() + timeout, timeout=timeout)
            except _PortInUseError:
                self._cleanup()
                if attempt == 2:
                    raise
            except BaseException:
                self._cleanup()
                raise
            else:
                self.startup_seconds = time.monotonic() - started
                return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after the stop timeout); remove data.

        Idempotent, and safe to call from the atexit hook or the SIGTERM handler.
        """
        self._cleanup()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._layout is not None else "not started"
        return f"<ControlPlane {where} running={self.running}>"

    # ---- faults --------------------------------------------------------------------------------

    def kill(self, component: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``"etcd"`` or ``"kube-apiserver"`` (its process group) and reap it.

        For fault injection: :meth:`revive` starts it again with the same command line, ports and
        data. The other component keeps running (an apiserver without etcd answers errors).
        """
        process = self._component(component)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def revive(self, component: str, *, timeout: float | None = None) -> None:
        """Start a component stopped by :meth:`kill` again and wait until it is ready."""
        process = self._component(component)
        if process.poll() is None:
            raise ControlPlaneError(f"{component} is still running (pid {process.pid})")
        timeout = timeout or self._start_timeout or DEFAULT_START_TIMEOUT
        deadline = time.monotonic() + timeout
        if component == "etcd":
            self._etcd = self._spawn(self.etcd_command, self.etcd_log_path)
            self._wait(
                "etcd", self._etcd, self.etcd_log_path, deadline, timeout, self._etcd_healthy
            )
        else:
            self._apiserver = self._spawn(self.apiserver_command, self.apiserver_log_path)
            self._wait(
                "kube-apiserver",
                self._apiserver,
                self.apiserver_log_path,
                deadline,
                timeout,
                self._apiserver_ready,
            )

    def _component(self, component: str) -> subprocess.Popen[bytes]:
        process = {"etcd": self._etcd, "kube-apiserver": self._apiserver}.get(component)
        if component not in ("etcd", "kube-apiserver"):
            raise ValueError(f"unknown component {component!r} (etcd or kube-apiserver)")
        if process is None:
            raise ControlPlaneError("the control plane is not started")
        return process

    # ---- internals -----------------------------------------------------------------------------

    def _start_once(self, folder: Path, *, deadline: float, timeout: float) -> None:
        apiserver_port, etcd_client_port, etcd_peer_port = _free_ports(3)
        base = self._base_dir
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        data_dir = Path(tempfile.mkdtemp(prefix="ccm-controlplane-", dir=base))
        self._layout = _Layout(
            data_dir=data_dir,
            etcd_client_port=etcd_client_port,
            etcd_peer_port=etcd_peer_port,
            apiserver_port=apiserver_port,
        )
        self._close_admin()
        self._pids = []
        self._write_certificates()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        _install_hooks()

        etcd = folder / assets.ETCD_BINARY
        peer = f"http://127.0.0.1:{etcd_peer_port}"
        etcd_defaults: dict[str, str | None] = {
            "--name": "ccm",
            "--data-dir": str(data_dir / "etcd"),
            "--listen-client-urls": self.etcd_url,
            "--advertise-client-urls": self.etcd_url,
            "--listen-peer-urls": peer,
            "--initial-advertise-peer-urls": peer,
            "--initial-cluster": f"ccm={peer}",
            "--log-level": "warn",
        }
        if _etcd_supports_no_fsync(etcd):
            etcd_defaults["--unsafe-no-fsync"] = "true"
        self.etcd_command = [str(etcd), *_merge_args(etcd_defaults, self._extra_etcd_args)]
        self._etcd = self._spawn(self.etcd_command, self.etcd_log_path)
        self._wait("etcd", self._etcd, self.etcd_log_path, deadline, timeout, self._etcd_healthy)

        cert_dir = self._require().certs
        apiserver_defaults: dict[str, str | None] = {
            "--etcd-servers": self.etcd_url,
            "--bind-address": "127.0.0.1",
            "--advertise-address": "127.0.0.1",
            "--secure-port": str(apiserver_port),
            "--cert-dir": str(data_dir / "apiserver"),
            "--tls-cert-file": str(cert_dir / "serving.crt"),
            "--tls-private-key-file": str(cert_dir / "serving.key"),
            "--client-ca-file": str(self.client_ca_cert_path),
            "--authorization-mode": "Node,RBAC",
            "--service-cluster-ip-range": SERVICE_CLUSTER_IP_RANGE,
            "--endpoint-reconciler-type": "none",
            "--allow-privileged": "true",
            "--service-account-issuer": self.url,
            "--service-account-key-file": str(cert_dir / "sa.pub"),
            "--service-account-signing-key-file": str(self.service_account_key_path),
        }
        if self._audit_policy is not None:
            policy = data_dir / "audit-policy.yaml"
            policy.write_text(self._audit_policy, "utf-8")
            apiserver_defaults["--audit-policy-file"] = str(policy)
            apiserver_defaults["--audit-log-path"] = str(self.audit_log_path)
            apiserver_defaults["--audit-log-format"] = "json"
        apiserver = folder / assets.APISERVER_BINARY
        self.apiserver_command = [
            str(apiserver),
            *_merge_args(apiserver_defaults, self._extra_apiserver_args),
        ]
        self._apiserver = self._spawn(self.apiserver_command, self.apiserver_log_path)
        self._wait(
            "kube-apiserver",
            self._apiserver,
            self.apiserver_log_path,
            deadline,
            timeout,
            self._apiserver_ready,
        )

    def _spawn(self, command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self._env}
        parent = os.getpid()

        def factory() -> subprocess.Popen[bytes]:
            with log_path.open("ab") as log:
                return subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._require().data_dir,
                    start_new_session=True,  # own process group: Ctrl-C goes to us, we stop them
                    preexec_fn=_die_with_parent(parent),
                )

        process = _SPAWNER.spawn(factory)
        self._pids.append(process.pid)
        return process

    def _wait(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        deadline: float,
        timeout: float,
        probe: Callable[[], tuple[bool, str]],
    ) -> None:
        last = "no answer yet"
        while True:
            if process.poll() is not None:
                raise self._failure(
                    f"{name} exited with code {process.returncode} while starting", log_path
                )
            try:
                ready, last = probe()
            except (OSError, http.client.HTTPException) as exc:
                ready, last = False, f"{type(exc).__name__}: {exc}"
            if ready:
                return
            if time.monotonic() >= deadline:
                raise self._failure(
                    f"{name} not ready after {timeout:g} s (last probe: {last})", log_path
                )
            time.sleep(0.1)

    def _failure(self, message: str, log_path: Path) -> ControlPlaneError:
        tail = _tail(log_path)
        kind = _PortInUseError if _PORT_IN_USE.search(tail) else ControlPlaneError
        return kind(f"{message}; last {_LOG_TAIL_LINES} lines of {log_path.name}:\n{tail}")

    def _etcd_healthy(self) -> tuple[bool, str]:
        layout = self._require()
        connection = http.client.HTTPConnection("127.0.0.1", layout.etcd_client_port, timeout=2)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        healthy = response.status == 200 and json.loads(body or b"{}").get("health") == "true"
        return healthy, f"/health {response.status} {body[:200]!r}"

    def _apiserver_ready(self) -> tuple[bool, str]:
        status, body = self.request("GET", "/readyz", timeout=5)
        if status != 200:
            failed = [line for line in body.decode(errors="replace").splitlines() if "[-]" in line]
            return False, f"/readyz {status} {'; '.join(failed)[:500]}"
        status, body = self.request("GET", "/api/v1/namespaces/default", timeout=5)
        return status == 200, f"namespace default: {status}"

    def _cleanup(self) -> None:
        if self._stopping:
            # Re-entered from the SIGTERM handler while stopping: Popen.wait is not re-entrant.
            return
        self._stopping = True
        try:
            stop_timeout = self._stop_timeout or _env_seconds(
                "CCM_CONTROLPLANE_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT
            )
            for process in (self._apiserver, self._etcd):
                if process is not None:
                    _terminate(process, stop_timeout)
            self._apiserver = self._etcd = None
            self._close_admin()
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            if self._layout is not None and not self._keep_data_dir:
                shutil.rmtree(self._layout.data_dir, ignore_errors=True)
        finally:
            self._stopping = False
