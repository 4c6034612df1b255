"""End to end: the ``ccm`` daemon with ``--cloud-provider azure`` (found by its entry point), the
fake ARM server over HTTPS (a service principal's token from its token endpoint) and the real
kube-apiserver. Nodes for VMs in two zones are initialized with upstream's provider IDs, labels
and addresses and get a route per pod CIDR; a LoadBalancer Service gets a frontend and public IP
on the shared load balancer; a deleted VM's Node is deleted, and its route; a deallocated VM's
Node is kept with the shutdown taint; the deleted Service's load balancer goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ccm_azure.testing.arm import serve_in_thread
from ccm_azure.testing.world import AzureWorld, azure_json

from ccm import wellknown
from ccm.testing import kubelet
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from ccm.testing.kubelet import wait

pytestmark = pytest.mark.e2e


def test_azure_provider_initializes_deletes_and_taints_nodes(
    control_plane: ControlPlane,
    kube_core: Any,
    tmp_path: Path,
    unique_name: Callable[..., str],
    kube_namespace: str,
) -> None:
    core = kube_core
    with serve_in_thread() as arm:
        world = AzureWorld(arm, resource_group="RG-E2E", location="westeurope")
        world.create_security_group()
        names = [unique_name("vm") for _ in range(4)]
        ips = [f"10.1.0.{i + 4}" for i in range(4)]
        pips = [f"52.1.0.{i + 4}" for i in range(4)]
        for i, name in enumerate(names):
            world.create_vm(name, zone=str(i % 2 + 1), private_ip=ips[i], public_ip=pips[i])
            kubelet.register_node(core, name)
        config = tmp_path / "azure.json"
        config.write_text(azure_json(arm, resourceGroup="RG-E2E", location="westeurope"))
        daemon = Daemon(
            [
                "--cloud-provider=azure",
                f"--cloud-config={config}",
                f"--kubeconfig={control_plane.kubeconfig_path}",
                f"--leader-elect-resource-name={unique_name('lease')}",
                "--node-monitor-period=1s",
                "--cluster-cidr=10.250.0.0/16",
                "--cluster-name=e2e",
                "--route-reconciliation-period=1s",
                "-v",
                "2",
            ],
            log_dir=tmp_path,
            env={"SSL_CERT_FILE": str(arm.ca_path)},
        )
        with daemon:
            # 1. Initialization from ARM.
            for i, name in enumerate(names):
                node = wait(
                    lambda n=name: not kubelet.is_uninitialized(x := core.read_node(n)) and x,
                    f"{name} initialized",
                )
                assert node.spec.provider_id == (
                    "azure:///subscriptions/sub-1/resourceGroups/rg-e2e/providers/"
                    f"Microsoft.Compute/virtualMachines/{name}"
                )
                labels = node.metadata.labels
                assert labels[wellknown.LABEL_INSTANCE_TYPE] == "Standard_D2s_v3"
                assert labels[wellknown.LABEL_ZONE] == f"westeurope-{i % 2 + 1}"
                assert labels[wellknown.LABEL_REGION] == "westeurope"
                node = wait(
                    lambda n=name: (x := core.read_node(n)).status.addresses and x, "addresses"
                )
                assert [(a.type, a.address) for a in node.status.addresses] == [
                    ("InternalIP", ips[i]),
                    ("Hostname", name),
                    ("ExternalIP", pips[i]),
                ]

            # 2. A route per pod CIDR, to the Node's internal IP; another cluster's kept.
            table = world.create_route_table()
            arm.put_resource(
                table + "/routes/elsewhere",
                {"properties": {"addressPrefix": "192.168.0.0/24",
                                "nextHopType": "VirtualAppliance",
                                "nextHopIpAddress": "192.168.0.1"}},
            )  # fmt: skip
            for i, name in enumerate(names):
                cidr = f"10.250.{i + 1}.0/24"
                core.patch_node(name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})

            def routes() -> dict[str, str]:
                return {n: r["properties"]["nextHopIpAddress"] for n, r in world.routes().items()}

            want = {f"{n}____10250{i + 1}024": ips[i] for i, n in enumerate(names)}
            wait(lambda: routes() == {**want, "elsewhere": "192.168.0.1"}, "a route per Node")

            # 3. A LoadBalancer Service: a frontend and public IP on the shared load balancer.
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

            ip = wait(ingress, "the Service's ingress")[0].ip
            lb_id = world.resource_id("Microsoft.Network", "loadBalancers", "e2e")
            body = arm.get_resource(lb_id)
            assert body is not None
            (frontend,) = body["properties"]["frontendIPConfigurations"]
            pip = arm.get_resource(frontend["properties"]["publicIPAddress"]["id"])
            assert pip is not None and pip["properties"]["ipAddress"] == ip
            uid = core.read_namespaced_service(svc_name, kube_namespace).metadata.uid
            assert pip["name"] == "e2e-a" + uid.replace("-", "")[:31]
            (rule,) = world.security_rules().values()
            assert rule["properties"]["destinationAddressPrefix"] == ip

            # 4. Deleted → Node and route deleted; deallocated → Node kept, tainted shutdown.
            _, _, doomed, stopped = names
            world.delete_vm(doomed)
            world.set_power(stopped, "deallocated")
            for name in (doomed, stopped):
                kubelet.set_ready(core, name, False)
            wait(
                lambda: doomed not in {n.metadata.name for n in core.list_node().items},
                "the deleted VM's Node deleted",
            )
            wait(
                lambda: any(
                    t.key == wellknown.TAINT_SHUTDOWN
                    for t in core.read_node(stopped).spec.taints or []
                ),
                "the deallocated VM's Node tainted",
            )
            assert {n.metadata.name for n in core.list_node().items} >= set(names) - {doomed}
            del want[f"{doomed}____102503024"]
            wait(lambda: routes() == {**want, "elsewhere": "192.168.0.1"}, "its route deleted")

            # 5. The Service deleted: the load balancer (its last frontend) and public IP go.
            core.delete_namespaced_service(svc_name, kube_namespace)
            wait(lambda: arm.get_resource(lb_id) is None, "the load balancer deleted")
            wait(lambda: arm.get_resource(pip["id"]) is None, "the Service's public IP deleted")
            assert world.security_rules() == {}, "its security rule removed"
        log = daemon.log()
        assert arm.tokens_issued >= 1
    assert "subscription sub-1, resource group RG-E2E, location westeurope" in log
