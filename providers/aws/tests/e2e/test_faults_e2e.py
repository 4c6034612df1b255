"""Faults end to end: the ``ccm`` daemon with ``--cloud-provider aws`` reaches moto through a proxy
that throttles (``RequestLimitExceeded``, ``Throttling``) and fails (HTTP 500, before or after the
call is made) a share of the AWS calls. Nodes still initialize and none is deleted; a classic ELB
and an NLB come up, one of each, with every instance behind them; once the Services go, nothing
tagged for the cluster is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from ccm_aws import annotations as ann
from ccm_aws.testing import Ec2Console, MotoServer, cloud_config, tagged_for

from ccm.testing import kubelet
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon
from ccm.testing.kubelet import wait

from ..faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

#: Each converges within this many seconds despite the faults (a throttled sync waits 5 s).
BOUND = 90.0


def test_aws_faults_lose_no_node_and_leak_no_load_balancer(
    control_plane: ControlPlane,
    kube_core: Any,
    moto_server: MotoServer,
    console: Ec2Console,
    network: dict[str, Any],
    cluster_id: str,
    tmp_path: Path,
    unique_name: Callable[..., str],
    kube_namespace: str,
) -> None:
    core = kube_core
    console.make_public(network["vpc"])
    zones = sorted(network["subnets"])
    instances = [
        console.run_instance(network["subnets"][zones[i % 2]], cluster_id=cluster_id)
        for i in range(4)
    ]
    names = [str(i["PrivateDnsName"]) for i in instances]
    ids = {str(i["InstanceId"]) for i in instances}
    for name in names:
        kubelet.register_node(core, name)
    with FaultProxy(moto_server.url, throttle=0.03, error=0.05, lost=0.05) as proxy:
        config = tmp_path / "cloud.conf"
        config.write_text(
            cloud_config(proxy.url, region="us-east-1", KubernetesClusterID=cluster_id)
        )
        daemon = Daemon(
            [
                "--cloud-provider=aws",
                f"--cloud-config={config}",
                f"--kubeconfig={control_plane.kubeconfig_path}",
                f"--leader-elect-resource-name={unique_name('lease')}",
                "--node-monitor-period=1s",
                "--configure-cloud-routes=false",
                "-v",
                "2",
            ],
            log_dir=tmp_path,
        )
        with daemon:
            services = {unique_name("elb"): {}, unique_name("nlb"): {ann.TYPE: "nlb"}}
            for name, annotations in services.items():
                core.create_namespaced_service(
                    kube_namespace,
                    {
                        "metadata": {"name": name, "annotations": annotations},
                        "spec": {
                            "type": "LoadBalancer",
                            "selector": {"app": "web"},
                            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
                        },
                    },
                )
            for name in names:
                wait(
                    lambda n=name: not kubelet.is_uninitialized(core.read_node(n)),
                    f"{name} initialized",
                    timeout=BOUND,
                )

            def ingress(name: str) -> list[Any]:
                svc = core.read_namespaced_service(name, kube_namespace)
                return (svc.status.load_balancer and svc.status.load_balancer.ingress) or []

            for name in services:
                wait(lambda n=name: ingress(n), f"{name}'s ingress", timeout=BOUND)

            def backends() -> tuple[list[set[str]], list[set[str]]]:
                try:
                    return read_backends()
                except botocore.exceptions.ClientError:
                    return [], []  # changed by the daemon while read

            def read_backends() -> tuple[list[set[str]], list[set[str]]]:
                classic = [
                    {i["InstanceId"] for i in d["Instances"]}
                    for d in console.elb.describe_load_balancers()["LoadBalancerDescriptions"]
                    if d["LoadBalancerName"] in lb_names
                ]
                nlbs = [
                    x
                    for x in console.elbv2.describe_load_balancers()["LoadBalancers"]
                    if x["LoadBalancerName"] in lb_names
                ]
                targets = []
                for nlb in nlbs:
                    for listener in console.elbv2.describe_listeners(
                        LoadBalancerArn=nlb["LoadBalancerArn"]
                    )["Listeners"]:
                        arn = listener["DefaultActions"][0]["TargetGroupArn"]
                        health = console.elbv2.describe_target_health(TargetGroupArn=arn)
                        targets.append(
                            {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]}
                        )
                return classic, targets

            lb_names = {
                "a"
                + core.read_namespaced_service(n, kube_namespace).metadata.uid.replace("-", "")[:31]
                for n in services
            }
            wait(lambda: backends() == ([ids], [ids]), "every instance behind each", timeout=BOUND)
            # One of each, never two: the load balancers the cluster owns are exactly these.
            owned = tagged_for(console, cluster_id)
            assert sum(1 for x in owned if x in lb_names) == 1  # the classic ELB, by name
            assert sum(1 for x in owned if ":loadbalancer/" in x) == 1  # the NLB, by ARN
            assert {n.metadata.name for n in core.list_node().items} >= set(names)
            for name in services:
                core.delete_namespaced_service(name, kube_namespace)
            left: list[str] = []

            def cleaned() -> bool:
                left[:] = tagged_for(console, cluster_id)
                return not left

            try:
                wait(cleaned, "nothing tagged for the cluster left", timeout=BOUND)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {left}") from None
            assert {n.metadata.name for n in core.list_node().items} >= set(names)
        proxy.enabled = False
    assert proxy.counts["throttle"] and proxy.counts["error"] and proxy.counts["lost"], proxy.counts
    log = daemon.log()
    assert "throttled" in log
