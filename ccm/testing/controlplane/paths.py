"""The control plane's settings, its error, and where its files and ports are once started."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ccm import errors

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


class ControlPlaneError(errors.CCMError):
    """The control plane failed to start, or an operation on it failed.

    Start failures carry the last lines of the failing process's log in the message.
    """


class ApiserverUnreachableError(ConnectionError):
    """A request of :meth:`ControlPlane.request` got no answer: the apiserver is not up (yet), was
    stopped, or did not answer in time. An :class:`OSError`, as a refused connection is."""


class _PortInUseError(ControlPlaneError):
    """A child lost the race for a free port; start() retries with new ports."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Layout:
    data_dir: Path
    etcd_client_port: int
    etcd_peer_port: int
    apiserver_port: int

    @property
    def certs(self) -> Path:
        return self.data_dir / "certs"


class ControlPlanePaths:
    """The URLs, ports and file paths of a started :class:`ControlPlane` (its base)."""

    _layout: _Layout | None

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

    # ---- internals -----------------------------------------------------------------------------

    def _require(self) -> _Layout:
        if self._layout is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._layout
