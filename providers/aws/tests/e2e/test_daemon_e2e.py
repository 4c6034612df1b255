"""End to end: the ``ccm`` daemon with ``--cloud-provider aws`` (found by its entry point), moto's
EC2 over HTTP and the real kube-apiserver. Nodes named like EC2 private DNS names in two zones are
initialized from their instances and get a route per pod CIDR; a LoadBalancer Service gets a
classic ELB with the Nodes' instances behind it; a terminated instance's Node is deleted, and its
route with it; a stopped one's Node is kept with the shutdown taint; the deleted Service's ELB
goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from ccm_aws import annotations as ann
from ccm_aws.instances import LABEL_ZONE_ID
from ccm_aws.testing import Ec2Console, tagged_for

from ccm import wellknown
from ccm.testing import kubelet
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from ccm.testing.kubelet import wait

pytestmark = pytest.mark.e2e


def test_aws_provider_initializes_deletes_and_taints_nodes(
    control_plane: ControlPlane,
    kube_core: Any,
    console: Ec2Console,
    network: dict[str, Any],
    cluster_id: str,
    config_text: str,
    tmp_path: Path,
    unique_name: Callable[..., str],
    kube_namespace: str,
) -> None:
    core = kube_core
    table = console.create_route_table(network["vpc"], cluster_id)
    console.make_public(network["vpc"])
    zones = sorted(network["subnets"])
    instances = [
        console.run_instance(network["subnets"][zones[i % 2]], cluster_id=cluster_id)
        for i in range(4)
    ]
    names = [str(i["PrivateDnsName"]) for i in instances]
    for name in names:
        kubelet.register_node(core, name)
    config = tmp_path / "cloud.conf"
    config.write_text(config_text)
    daemon = Daemon(
        [
            "--cloud-provider=aws",
            f"--cloud-config={config}",
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--leader-elect-resource-name={unique_name('lease')}",
            "--node-monitor-period=1s",
            "--cluster-cidr=10.250.0.0/16",
            "--route-reconciliation-period=1s",
            "-v",
            "2",
        ],
        log_dir=tmp_path,
    )
    with daemon:
        # 1. Initialization from EC2.
        for instance, name in zip(instances, names, strict=True):
            node = wait(
                lambda n=name: not kubelet.is_uninitialized(x := core.read_node(n)) and x,
                f"{name} initialized",
            )
            zone = instance["Placement"]["AvailabilityZone"]
            assert node.spec.provider_id == f"aws:///{zone}/{instance['InstanceId']}"
            labels = node.metadata.labels
            assert labels[wellknown.LABEL_INSTANCE_TYPE] == "t3.medium"
            assert labels[wellknown.LABEL_ZONE] == zone
            assert labels[wellknown.LABEL_REGION] == "us-east-1"
            assert labels[LABEL_ZONE_ID] == console.zone_id(zone)
            node = wait(lambda n=name: (x := core.read_node(n)).status.addresses and x, "addresses")
            assert [(a.type, a.address) for a in node.status.addresses] == [
                ("InternalIP", instance["PrivateIpAddress"]),
                ("InternalDNS", name),
                ("Hostname", name),
            ]
        assert {core.read_node(n).metadata.labels[wellknown.LABEL_ZONE] for n in names} == set(
            zones
        )

        # 2. A route per pod CIDR, to the Node's instance.
        for i, name in enumerate(names):
            cidr = f"10.250.{i + 1}.0/24"
            core.patch_node(name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})

        def routes() -> set[tuple[str, str]]:
            return {(r["InstanceId"], r["DestinationCidrBlock"]) for r in console.routes(table)}

        want = {(i["InstanceId"], f"10.250.{n + 1}.0/24") for n, i in enumerate(instances)}
        wait(lambda: routes() == want, "one route per pod CIDR")

        # 3. A LoadBalancer Service: a classic ELB with every Node's instance behind it.
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

        def ingress(name: str = svc_name) -> list[Any]:
            svc = core.read_namespaced_service(name, kube_namespace)
            return (svc.status.load_balancer and svc.status.load_balancer.ingress) or []

        hostname = wait(ingress, "the Service's ingress")[0].hostname
        (elb,) = [
            d
            for d in console.elb.describe_load_balancers()["LoadBalancerDescriptions"]
            if d["DNSName"] == hostname
        ]
        assert sorted(i["InstanceId"] for i in elb["Instances"]) == sorted(
            i["InstanceId"] for i in instances
        )

        # 3b. An NLB Service: the hostname, a listener per port, every instance a target; a
        # port changed → the listeners follow. A malformed annotation: a Warning naming it.
        nlb_name = unique_name("nlb")
        core.create_namespaced_service(
            kube_namespace,
            {
                "metadata": {"name": nlb_name, "annotations": {ann.TYPE: "nlb"}},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            },
        )
        bad_name = unique_name("bad")
        core.create_namespaced_service(
            kube_namespace,
            {
                "metadata": {"name": bad_name, "annotations": {ann.HC_INTERVAL: "often"}},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
            },
        )
        nlb_host = wait(lambda: ingress(nlb_name), "the NLB Service's ingress")[0].hostname
        (nlb,) = [
            x
            for x in console.elbv2.describe_load_balancers()["LoadBalancers"]
            if x["DNSName"] == nlb_host
        ]
        assert nlb["Type"] == "network"

        def nlb_listeners() -> dict[int, tuple[int, set[str]]]:
            """Port → (node port, targets); ``{}`` when the daemon changed them while read."""
            out = {}
            try:
                for x in console.elbv2.describe_listeners(LoadBalancerArn=nlb["LoadBalancerArn"])[
                    "Listeners"
                ]:
                    arn = x["DefaultActions"][0]["TargetGroupArn"]
                    group = console.elbv2.describe_target_groups(TargetGroupArns=[arn])
                    health = console.elbv2.describe_target_health(TargetGroupArn=arn)
                    out[int(x["Port"])] = (
                        int(group["TargetGroups"][0]["Port"]),
                        {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]},
                    )
            except botocore.exceptions.ClientError:
                return {}
            return out

        ids = {i["InstanceId"] for i in instances}
        node_port = core.read_namespaced_service(nlb_name, kube_namespace).spec.ports[0].node_port
        wait(lambda: nlb_listeners() == {80: (node_port, ids)}, "the NLB's targets")
        core.patch_namespaced_service(
            nlb_name,
            kube_namespace,
            [{"op": "replace", "path": "/spec/ports/0/port", "value": 8081}],
        )
        wait(lambda: sorted(nlb_listeners()) == [8081], "the NLB's listener follows the port")
        warning = wait(
            lambda: [
                e.message
                for e in core.list_namespaced_event(
                    kube_namespace, field_selector=f"involvedObject.name={bad_name}"
                ).items
                if e.type == "Warning" and ann.HC_INTERVAL in (e.message or "")
            ],
            "a Warning naming the malformed annotation",
        )
        assert "often" in warning[0]
        assert not ingress(bad_name)

        # 4. Terminated → Node and route deleted; stopped → Node kept, tainted shutdown.
        _, _, doomed, stopped = names
        console.terminate(instances[2]["InstanceId"])
        console.stop(instances[3]["InstanceId"])
        for name in (doomed, stopped):
            kubelet.set_ready(core, name, False)
        wait(
            lambda: doomed not in {n.metadata.name for n in core.list_node().items},
            "the terminated instance's Node deleted",
        )
        wait(
            lambda: any(
                t.key == wellknown.TAINT_SHUTDOWN for t in core.read_node(stopped).spec.taints or []
            ),
            "the stopped instance's Node tainted",
        )
        assert core.read_node(stopped).spec.provider_id
        wait(
            lambda: routes() == want - {(instances[2]["InstanceId"], "10.250.3.0/24")},
            "the deleted Node's route deleted",
        )
        assert {n.metadata.name for n in core.list_node().items} >= set(names) - {doomed}
        # The deleted Node's instance leaves both load balancers; the stopped one leaves the NLB
        # (AWS refuses a stopped target) and stays behind the classic ELB.
        gone, halted = instances[2]["InstanceId"], instances[3]["InstanceId"]

        def elb_instances() -> set[str]:
            (found,) = console.elb.describe_load_balancers(
                LoadBalancerNames=[elb["LoadBalancerName"]]
            )["LoadBalancerDescriptions"]
            return {i["InstanceId"] for i in found["Instances"]}

        wait(lambda: elb_instances() == ids - {gone}, "the deleted Node's instance off the ELB")
        wait(
            lambda: nlb_listeners() == {8081: (node_port, ids - {gone, halted})},
            "the deleted and the stopped Nodes' instances off the NLB",
        )

        # 5. The Services deleted: nothing tagged for the cluster is left (ELB, NLB, target
        # groups, the ELB's security group) and the NLB's rules leave the nodes' groups.
        for name in (svc_name, nlb_name, bad_name):
            core.delete_namespaced_service(name, kube_namespace)
        wait(lambda: not tagged_for(console, cluster_id), "nothing tagged for the cluster left")
        wait(
            lambda: (
                elb["LoadBalancerName"]
                not in {
                    d["LoadBalancerName"]
                    for d in console.elb.describe_load_balancers()["LoadBalancerDescriptions"]
                }
            ),
            "the ELB deleted",
        )
    log = daemon.log()
    assert f"AWS cloud filtering on ClusterID: {cluster_id}" in log
    assert "does not implement the optional interface Instances" in log
    assert "optional interface LoadBalancer" not in log
    assert "optional interface Routes" not in log
