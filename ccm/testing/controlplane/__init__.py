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

from ccm.testing.controlplane.cli import main
from ccm.testing.controlplane.launcher import ControlPlane
from ccm.testing.controlplane.paths import (
    DEFAULT_AUDIT_POLICY,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    SERVICE_CLUSTER_IP_RANGE,
    ApiserverUnreachableError,
    ControlPlaneError,
)

__all__ = [
    "DEFAULT_AUDIT_POLICY",
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "SERVICE_CLUSTER_IP_RANGE",
    "ApiserverUnreachableError",
    "ControlPlane",
    "ControlPlaneError",
    "main",
]
