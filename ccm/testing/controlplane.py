"""A real kube-apiserver and etcd on 127.0.0.1, for tests, benchmarks and the demo.

:class:`ControlPlane` starts etcd and kube-apiserver as child processes on free loopback ports,
with a throw-away directory holding etcd's data, freshly generated certificates (ECDSA P-256, made
by :mod:`ccm.certs`), the logs and an audit log. There is no kube-controller-manager, scheduler or
kubelet: what those would do (namespace finalisation, ``default`` service accounts, node
heartbeats) is up to the test, see :mod:`ccm.testing.pytest_plugin`. Binaries come from
:func:`ccm.testing.assets.find_assets`.

Identities::

    serving CA ── serving cert (SANs localhost, 127.0.0.1, kubernetes.default.svc, 10.96.0.1)
    client CA  ── admin client cert (CN=admin, O=system:masters) and every add_user() cert
    SA key     ── signs ServiceAccount tokens (issuer = the apiserver URL)

Authorisation is ``Node,RBAC``, and the default admission plugins stay on (ServiceAccount
included), so TokenRequest works and RBAC can be tested with :meth:`ControlPlane.add_user`.

Children never outlive us: each runs in its own process group with ``PR_SET_PDEATHSIG=SIGKILL``; an
``atexit`` hook and a chaining SIGTERM handler stop every running control plane.

Command line: ``python -m ccm.testing.controlplane`` starts one, prints its admin kubeconfig path on
stdout and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import dataclasses
import hashlib
import http.client
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

from ccm import certs, errors
from ccm.testing import assets

__all__ = [
    "DEFAULT_AUDIT_POLICY",
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "SERVICE_CLUSTER_IP_RANGE",
    "ControlPlane",
    "ControlPlaneError",
    "main",
]

DEFAULT_START_TIMEOUT = 60.0
"""Seconds for etcd and kube-apiserver to be ready (env ``CCM_CONTROLPLANE_START_TIMEOUT``)."""

DEFAULT_STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL, per process (env ``CCM_CONTROLPLANE_STOP_TIMEOUT``)."""

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
"""``--service-cluster-ip-range``: large enough for LoadBalancer Service scale tests."""

DEFAULT_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""
"""Audit policy: every request at ``Metadata`` level, one JSON line each (ResponseComplete)."""

_LOG_TAIL_LINES = 30
_PORT_IN_USE = re.compile(r"address already in use", re.IGNORECASE)
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(errors.CCMError):
    """The control plane failed to start, or an operation on it failed.

    Start failures carry the last lines of the failing process's log in the message.
    """


class _PortInUseError(ControlPlaneError):
    """A child lost the race for a free port; start() retries with new ports."""


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


# --------------------------------------------------------------------------------------------------
# the control plane


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Layout:
    data_dir: Path
    etcd_client_port: int
    etcd_peer_port: int
    apiserver_port: int

    @property
    def certs(self) -> Path:
        return self.data_dir / "certs"


class ControlPlane:
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
        self._ssl_context: ssl.SSLContext | None = None
        self._pids: list[int] = []
        self._stopping = False
        self.startup_seconds: float | None = None
        """Wall-clock seconds the last successful :meth:`start` took (without any asset build)."""
        self.apiserver_command: list[str] = []
        """The kube-apiserver command line of the last start, for debugging."""
        self.etcd_command: list[str] = []
        """The etcd command line of the last start, for debugging."""

    # ---- public attributes ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The apiserver URL, ``https://127.0.0.1:PORT``."""
        return f"https://127.0.0.1:{self._require().apiserver_port}"

    @property
    def etcd_url(self) -> str:
        """etcd's client URL, ``http://127.0.0.1:PORT`` (plain HTTP, loopback only)."""
        return f"http://127.0.0.1:{self._require().etcd_client_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        """The loopback ports in use: (apiserver, etcd client, etcd peer)."""
        layout = self._require()
        return layout.apiserver_port, layout.etcd_client_port, layout.etcd_peer_port

    @property
    def data_dir(self) -> Path:
        """The temporary directory holding it all: ``etcd/`` data, ``certs/``, logs, audit log."""
        return self._require().data_dir

    @property
    def kubeconfig_path(self) -> Path:
        """Admin kubeconfig: client certificate ``CN=admin, O=system:masters``, data embedded."""
        return self.data_dir / "admin.kubeconfig"

    @property
    def ca_cert_path(self) -> Path:
        """The CA that signed the apiserver's serving certificate (trust it for :attr:`url`)."""
        return self._require().certs / "serving-ca.crt"

    @property
    def client_ca_cert_path(self) -> Path:
        """The CA the apiserver trusts for client certificates (``--client-ca-file``)."""
        return self._require().certs / "client-ca.crt"

    @property
    def admin_cert_path(self) -> Path:
        """The admin client certificate (PEM), for clients configured without a kubeconfig."""
        return self._require().certs / "admin.crt"

    @property
    def admin_key_path(self) -> Path:
        """The admin client key (PEM, PKCS#8)."""
        return self._require().certs / "admin.key"

    @property
    def service_account_key_path(self) -> Path:
        """The ServiceAccount token signing key (``--service-account-signing-key-file``)."""
        return self._require().certs / "sa.key"

    @property
    def audit_log_path(self) -> Path:
        """The audit log: one JSON event per line, Metadata level (absent if audit is disabled)."""
        return self.data_dir / "audit.log"

    @property
    def apiserver_log_path(self) -> Path:
        """kube-apiserver's stdout and stderr."""
        return self.data_dir / "kube-apiserver.log"

    @property
    def etcd_log_path(self) -> Path:
        """etcd's stdout and stderr."""
        return self.data_dir / "etcd.log"

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

    # ---- identities ----------------------------------------------------------------------------

    def add_user(self, name: str, groups: Sequence[str] = ()) -> Path:
        """Issue a client cert ``CN=name, O=groups…`` from the client CA; return its kubeconfig.

        The user is authenticated but has no RBAC bindings beyond what its groups grant
        (``system:authenticated`` only, unless e.g. ``system:masters`` is given). Useful to test a
        ClusterRole, or a Node identity (``system:node:<name>`` in group ``system:nodes``). The
        kubeconfig embeds its data; the cert and key also sit beside it as ``<name>.crt/.key``.
        """
        layout = self._require()
        if self._client_ca is None:
            raise ControlPlaneError("the control plane is not started")
        pair = certs.issue(self._client_ca, name, usage="client", organizations=groups)
        folder = layout.data_dir / "users"
        folder.mkdir(exist_ok=True)
        base = _safe_file_name(name)
        pair.write(folder / f"{base}.crt", folder / f"{base}.key")
        path = folder / f"{base}.kubeconfig"
        self._write_kubeconfig(path, name, pair)
        return path

    def metrics_reader_token(self, name: str = "ccm-metrics-reader") -> str:
        """A token of ServiceAccount ``kube-system/<name>``, bound (created if missing) to a
        ClusterRole that may ``get`` the non-resource URL ``/metrics`` — what a Prometheus scraper
        of ccm needs under delegated authorization."""
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        for path, body in (
            ("/api/v1/namespaces/kube-system/serviceaccounts", {"metadata": {"name": name}}),
            (
                f"{rbac}/clusterroles",
                {
                    "metadata": {"name": name},
                    "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
                },
            ),
            (
                f"{rbac}/clusterrolebindings",
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": name,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}
                    ],
                },
            ),
        ):
            status, raw = self.request("POST", path, body)
            if status not in (201, 409):
                raise ControlPlaneError(f"POST {path}: HTTP {status}: {raw[:300]!r}")
        return self.service_account_token("kube-system", name)

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        audiences: Sequence[str] = (),
        expiration_seconds: int = 3600,
        create: bool = True,
    ) -> str:
        """Return a bound token for ServiceAccount ``namespace/name``, obtained by TokenRequest.

        With ``create`` (default) the namespace and the ServiceAccount are created when missing.
        ``audiences`` defaults to the apiserver's (the issuer URL); ``expiration_seconds`` >= 600.
        """
        quoted_ns, quoted_name = urllib.parse.quote(namespace), urllib.parse.quote(name)
        if create:
            for path, body in (
                ("/api/v1/namespaces", {"metadata": {"name": namespace}}),
                (f"/api/v1/namespaces/{quoted_ns}/serviceaccounts", {"metadata": {"name": name}}),
            ):
                status, raw = self.request("POST", path, body)
                if status not in (201, 409):
                    raise ControlPlaneError(f"POST {path} answered {status}: {raw[:500]!r}")
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        path = f"/api/v1/namespaces/{quoted_ns}/serviceaccounts/{quoted_name}/token"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        status, raw = self.request("POST", path, request)
        if status != 201:
            raise ControlPlaneError(
                f"TokenRequest for {namespace}/{name} answered {status}: {raw[:500]!r}"
            )
        token: str = json.loads(raw)["status"]["token"]
        return token

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """Send one request as admin with the standard library; return (HTTP status, body bytes).

        ``body``, when given, is sent as JSON. Meant for set-up and probes, not for code under test.
        """
        layout = self._require()
        connection = http.client.HTTPSConnection(
            "127.0.0.1", layout.apiserver_port, context=self._admin_context(), timeout=timeout
        )
        headers = {"Accept": "application/json"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    # ---- internals -----------------------------------------------------------------------------

    def _require(self) -> _Layout:
        if self._layout is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._layout

    def _admin_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context(cafile=str(self.ca_cert_path))
            context.load_cert_chain(str(self.admin_cert_path), str(self.admin_key_path))
            self._ssl_context = context
        return self._ssl_context

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
        self._ssl_context = None
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

    def _write_certificates(self) -> None:
        folder = self._require().certs
        folder.mkdir(mode=0o700)
        serving_ca = certs.new_ca("ccm-test-serving-ca")
        serving_ca.write(folder / "serving-ca.crt", folder / "serving-ca.key")
        serving = certs.issue(
            serving_ca,
            "kube-apiserver",
            usage="server",
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=[
                "127.0.0.1",
                next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts()),
            ],
        )
        serving.write(folder / "serving.crt", folder / "serving.key")
        self._client_ca = certs.new_ca("ccm-test-client-ca")
        self._client_ca.write(folder / "client-ca.crt", folder / "client-ca.key")
        admin = certs.issue(
            self._client_ca, "admin", usage="client", organizations=["system:masters"]
        )
        admin.write(self.admin_cert_path, self.admin_key_path)
        sa_key = certs.new_key()
        certs.write_key(self.service_account_key_path, sa_key)
        (folder / "sa.pub").write_bytes(certs.public_key_to_pem(sa_key))
        self._write_kubeconfig(self.kubeconfig_path, "admin", admin)

    def _write_kubeconfig(self, path: Path, user: str, pair: certs.KeyPair) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ccm-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64(self.ca_cert_path.read_bytes()),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(pair.cert_pem),
                        "client-key-data": b64(pair.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "ccm-test", "context": {"cluster": "ccm-test", "user": user}}],
            "current-context": "ccm-test",
            "preferences": {},
        }
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")

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
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            if self._layout is not None and not self._keep_data_dir:
                shutil.rmtree(self._layout.data_dir, ignore_errors=True)
        finally:
            self._stopping = False


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ccm.testing.controlplane``: start, print the kubeconfig, wait."""
    parser = argparse.ArgumentParser(
        prog="python -m ccm.testing.controlplane",
        description="Run a kube-apiserver and etcd on 127.0.0.1 until Ctrl-C or SIGTERM. "
        "Prints the admin kubeconfig path on stdout.",
    )
    parser.add_argument(
        "--apiserver-arg",
        action="append",
        default=[],
        metavar="--FLAG=VALUE",
        help="extra kube-apiserver flag (repeatable)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data dir (logs, certs, etcd data) on exit"
    )
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)  # start() chains its own handler in front of this one
    control_plane = ControlPlane(extra_apiserver_args=args.apiserver_arg, keep_data_dir=args.keep)
    try:
        control_plane.start()
    except errors.CCMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(control_plane.kubeconfig_path, flush=True)
        print(
            f"control plane ready in {control_plane.startup_seconds:.1f} s at {control_plane.url}\n"
            f"  export KUBECONFIG={control_plane.kubeconfig_path}\n"
            f"  logs: {control_plane.data_dir}\n"
            "Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        while not done.wait(1.0):
            # A SIGTERM stops the children from the chained handler before setting `done`.
            if not control_plane.running and not done.is_set():
                for log in (control_plane.etcd_log_path, control_plane.apiserver_log_path):
                    print(f"--- last lines of {log}:\n{_tail(log)}", file=sys.stderr)
                print("error: a control-plane process died", file=sys.stderr)
                return 1
        return 0
    finally:
        control_plane.stop()


if __name__ == "__main__":
    sys.exit(main())
