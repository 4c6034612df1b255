"""End to end: the real ``ccm`` daemon with the private-cloud sample provider (installed, found by
its entry point) against the sample's HTTP API and the real kube-apiserver — the whole story of
``make demo``, asserted: Nodes initialized, routes for pod CIDRs, a VIP for a LoadBalancer Service,
a stopped machine's Node tainted but kept, a deleted machine's Node deleted, the VIP given back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ccm import wellknown
from ccm.testing import kubelet
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from tests.e2e.conftest import Nodes, is_tainted

pytestmark = pytest.mark.e2e

CLUSTER = "kubernetes"
wait = functools.partial(kubelet.wait, timeout=45.0)


@pytest.fixture
def daemon(
    control_plane: ControlPlane, private_cloud: Any, tmp_path: Path, unique_name: Callable[..., str]
) -> Iterator[Callable[..., Daemon]]:
    from private_cloud.testing import write_cloud_config

    config = write_cloud_config(tmp_path / "cloud.yaml", private_cloud.url)
    started: list[Daemon] = []

    def make(*extra: str) -> Daemon:
        d = Daemon(
            [
                "--cloud-provider=private-cloud",
                f"--cloud-config={config}",
                f"--kubeconfig={control_plane.kubeconfig_path}",
                f"--leader-elect-resource-name={unique_name('lease')}",
                "--cluster-cidr=10.250.0.0/16",
                "--node-monitor-period=1s",
                "--route-reconciliation-period=1s",
                "-v",
                "2",
                *extra,
            ],
            log_dir=tmp_path,
        )
        started.append(d)
        return d.start()

    try:
        yield make
    finally:
        for d in started:
            d.stop()


def test_private_cloud_provider_runs_every_controller(
    k8s_admin: Any,
    nodes: Nodes,
    private_cloud: Any,
    daemon: Callable[..., Daemon],
    kube_namespace: str,
    unique_name: Callable[..., str],
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    admin = private_cloud.admin()
    names = [unique_name("pc-node") for _ in range(2)]
    machines = {}
    for i, name in enumerate(names):
        machines[name] = admin.create_machine(
            name,
            type="standard-4",
            zone=f"zone-{'ab'[i]}",
            region="region-1",
            addresses=[{"type": "InternalIP", "address": f"10.10.0.{i + 1}"}],
        )
        nodes.create(name)
    d = daemon()

    # 1. Initialization from the cloud's inventory.
    for i, name in enumerate(names):
        node = nodes.wait(name, lambda n: not is_tainted(n), what="initialized")
        assert node.spec.provider_id == f"private-cloud://{machines[name]['id']}"
        labels = node.metadata.labels
        assert labels[wellknown.LABEL_INSTANCE_TYPE] == "standard-4"
        assert labels[wellknown.LABEL_ZONE] == f"zone-{'ab'[i]}"
        assert labels[wellknown.LABEL_REGION] == "region-1"
        node = nodes.wait(name, lambda n: len(n.status.addresses or []) == 2, what="addresses")
        assert ("InternalIP", f"10.10.0.{i + 1}") in [
            (a.type, a.address) for a in node.status.addresses
        ]

    # 2. Routes for pod CIDRs.
    for i, name in enumerate(names):
        cidr = f"10.250.{i + 1}.0/24"
        core.patch_node(name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
    wait(
        lambda: (
            sorted((r["target"], r["cidr"]) for r in admin.routes(CLUSTER))
            == sorted((name, f"10.250.{i + 1}.0/24") for i, name in enumerate(names))
        ),
        "one route per pod CIDR",
    )

    # 3. A LoadBalancer Service gets a VIP from the pool.
    svc_name = unique_name("web")
    core.create_namespaced_service(
        kube_namespace,
        {
            "metadata": {"name": svc_name},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )

    def ingress() -> list[Any]:
        svc = core.read_namespaced_service(svc_name, kube_namespace)
        return (svc.status.load_balancer and svc.status.load_balancer.ingress) or []

    vip = wait(ingress, "the Service's ingress")[0].ip
    pool = {v["address"]: v["loadBalancer"] for v in admin.vips()}
    assert vip in pool
    assert pool[vip] is not None
    (lb,) = admin.load_balancers()
    assert lb["service"] == f"{kube_namespace}/{svc_name}"
    assert sorted(n["name"] for n in lb["nodes"]) == sorted(names)

    # 4. A stopped machine: the Node stays, tainted shutdown.
    keep, doomed = names
    admin.stop_machine(machines[doomed]["id"])
    kubelet.set_ready(core, doomed, False)
    nodes.wait(
        doomed,
        lambda n: any(t.key == wellknown.TAINT_SHUTDOWN for t in n.spec.taints or []),
        what="shutdown taint",
    )

    # 5. The machine is deleted in the cloud: its Node, route and backend go.
    admin.delete_machine(machines[doomed]["id"])

    def node_gone() -> bool:
        return doomed not in {n.metadata.name for n in core.list_node().items}

    wait(node_gone, "the deleted machine's Node deleted")
    nodes.created.remove(doomed)
    wait(lambda: [r["target"] for r in admin.routes(CLUSTER)] == [keep], "its route deleted")
    wait(
        lambda: [n["name"] for n in admin.load_balancers()[0]["nodes"]] == [keep],
        "its backend removed",
    )
    assert core.read_node(keep).spec.provider_id  # the other Node is untouched

    # 6. The Service is deleted: the load balancer goes and its VIP returns to the pool.
    core.delete_namespaced_service(svc_name, kube_namespace)
    wait(lambda: admin.load_balancers() == [], "load balancer deleted")
    assert all(v["loadBalancer"] is None for v in admin.vips())
    log = d.log()
    assert "does not implement the optional interface Instances" in log
    assert "optional interface LoadBalancer" not in log
    assert "optional interface Routes" not in log
    assert 'Skipping "' not in log
