"""How to start one implementation (ccm or the upstream Go CCM) on the bench's control plane."""

from __future__ import annotations

import compileall
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ccm
from bench import upstream
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import free_port

CONTROLLERS = "cloud-node-controller,service-lb-controller"

#: ``python -m ccm`` on uvloop's event loop, without a change to ccm: the policy is set before
#: ``asyncio.run`` creates the loop.
_UVLOOP_MAIN = (
    "import asyncio, runpy, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "runpy.run_module('ccm', run_name='__main__', alter_sys=True)"
)


@functools.cache
def compile_ccm() -> None:
    """Byte-compile ccm's sources once, as installing its wheel does: from a source checkout with
    ``PYTHONDONTWRITEBYTECODE`` set, every start would otherwise compile ~150 modules again (a
    quarter of ccm's start-up CPU), which no installed ccm pays and no compiled Go binary does."""
    compileall.compile_dir(Path(ccm.__file__).parent, quiet=1)


class Side:
    """How to start one implementation."""

    def __init__(
        self,
        name: str,
        cp: ControlPlane,
        work: Path,
        latency: float,
        ensure: float | None = None,
        *,
        cloud_qps: float = 0.0,
        batch: bool = False,
        kubeconfig: Path | None = None,
        loop: str = "asyncio",
    ) -> None:
        self.loop = loop  # ccm only: "uvloop" runs it on uvloop's event loop
        self.kubeconfig = kubeconfig or cp.kubeconfig_path  # default: the admin's
        self.ensure = ensure
        self.cloud_qps = cloud_qps  # token bucket over all fake cloud calls (burst 1); 0: none
        self.batch = batch  # ccm only: the fake offers InstancesBatch
        self.name = name
        self.cp = cp
        self.work = work
        self.latency = latency
        self.port = 0
        self.metrics_token = ""

    def command(self, settings: dict[str, str], *, leader_lease: str | None = None) -> list[str]:
        common = [
            "--cloud-provider=fake",
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={CONTROLLERS}",
            "--configure-cloud-routes=false",
            *[f"--{k}={v}" for k, v in settings.items()],
        ]
        if leader_lease:
            common += [
                "--leader-elect=true",
                f"--leader-elect-resource-name={leader_lease}",
                "--leader-elect-resource-namespace=kube-system",
            ]
        else:
            common.append("--leader-elect=false")
        self.port = free_port()
        if self.name == "ccm":
            compile_ccm()
            config = self.work / "fake-cloud.yaml"
            config.write_text(
                json.dumps(
                    {
                        "capabilities": {
                            "routes": False,
                            "zones": False,
                            "instances": False,
                            "instancesBatch": self.batch,
                        },
                        "defaultInstance": {"instanceType": "fake.medium"},
                        "latency": {"*": self.latency}
                        | ({} if self.ensure is None else {"create": self.ensure}),
                        "recordCalls": False,
                        "loadBalancer": {"ipPool": "100.64.0.0/16"},
                    }
                    | ({"rateLimit": {"qps": self.cloud_qps, "burst": 1}} if self.cloud_qps else {})
                )
            )
            return [
                sys.executable,
                *(["-c", _UVLOOP_MAIN] if self.loop == "uvloop" else ["-m", "ccm"]),
                *common,
                f"--cloud-config={config}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
            ]
        binary = upstream.build()
        return [
            str(binary),
            *common,
            f"--fake-latency={int(self.latency * 1000)}ms",
            *(
                []
                if self.ensure is None
                else [f"--fake-ensure-latency={int(self.ensure * 1000)}ms"]
            ),
            *([f"--fake-qps={self.cloud_qps}", "--fake-burst=1"] if self.cloud_qps else []),
            # Served like ccm's, so both answer the same /healthz probe (bench.metrics.LagProbe).
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            "--authentication-skip-lookup=true",
            "--webhook-secure-port=0",
        ]

    @contextlib.contextmanager
    def run(
        self, settings: dict[str, str], *, log_name: str, leader_lease: str | None = None
    ) -> Iterator[subprocess.Popen[bytes]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
        log = (self.work / f"{log_name}.log").open("wb")
        proc = subprocess.Popen(
            self.command(settings, leader_lease=leader_lease),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


#: The identity a CCM runs as in a cluster: ServiceAccount ``kube-system/cloud-controller-manager``.
CCM_USER = "system:serviceaccount:kube-system:cloud-controller-manager"


def ccm_identity(cp: ControlPlane) -> Path:
    """A kubeconfig for a client certificate of :data:`CCM_USER` in the ServiceAccount groups, bound
    to ``cluster-admin``: not ``system:masters``, so API Priority and Fairness classifies its
    requests like an in-cluster CCM's (flow schema ``kube-system-service-accounts``, priority level
    ``workload-high``; Lease requests ``workload-leader-election``) instead of exempting them."""
    path = cp.add_user(
        CCM_USER, groups=("system:serviceaccounts", "system:serviceaccounts:kube-system")
    )
    body = {
        "metadata": {"name": "bench-cloud-controller-manager"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "User", "name": CCM_USER, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    status, raw = cp.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)
    if status not in (201, 409):
        raise RuntimeError(f"binding {CCM_USER}: HTTP {status}: {raw[:300]!r}")
    return path
