"""Time to a classic ELB and to an NLB ready, and their AWS calls, measured on moto.

``python providers/aws/bench/lb_ready.py --rounds 5 --nodes 4`` launches that many instances in
moto's EC2 (in-process server, 127.0.0.1) and, each round, times the provider's
``ensure_load_balancer`` of a new two-port Service from the call to the returned status with the
hostname (the service controller writes it to the Service right after); the Nodes share one
security group tagged for the cluster, which admits each load balancer. Then a second ensure
with nothing to change (a resync), then the delete. It counts the AWS calls of each through
botocore's ``before-call`` event. moto answers in microseconds where AWS takes tens of
milliseconds per call, so the call counts carry over to AWS, the times do not.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from typing import Any

from ccm_aws.testing import Ec2Console, MotoServer, aws_test_env, cloud_config, patched_environ

from ccm.cloudprovider import Node, Service

NLB = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}


def service(annotations: dict[str, str]) -> Service:
    return Service(
        {
            "metadata": {
                "name": "web",
                "namespace": "bench",
                "uid": str(uuid.uuid4()),
                "annotations": annotations,
            },
            "spec": {
                "type": "LoadBalancer",
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080},
                    {"name": "https", "protocol": "TCP", "port": 443, "nodePort": 30443},
                ],
            },
        }
    )


async def measure(url: str, nodes: list[Node], rounds: int) -> dict[str, list[tuple[int, float]]]:
    from ccm_aws.provider import factory

    provider = await factory(cloud_config(url, KubernetesClusterID="bench").encode())
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    lb = provider.load_balancer()
    assert lb is not None
    out: dict[str, list[tuple[int, float]]] = {}

    async def timed(what: str, step: Any) -> Any:
        calls.clear()
        started = time.perf_counter()
        result = await step
        out.setdefault(what, []).append((sum(calls.values()), time.perf_counter() - started))
        return result

    try:
        for _ in range(rounds):
            for kind, annotations in (("ELB", {}), ("NLB", NLB)):
                svc = service(annotations)
                status = await timed(f"{kind} create", lb.ensure_load_balancer("k", svc, nodes))
                assert status.ingress
                assert status.ingress[0].hostname
                await timed(f"{kind} resync", lb.ensure_load_balancer("k", svc, nodes))
                await timed(f"{kind} delete", lb.ensure_load_balancer_deleted("k", svc))
    finally:
        await provider.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    with patched_environ(aws_test_env()), MotoServer() as moto:
        console = Ec2Console(moto.url)
        network = console.create_network("bench", cidr="10.78.0.0/16")
        console.make_public(network["vpc"])
        subnets = list(network["subnets"].values())
        group = console.ec2.create_security_group(
            GroupName="nodes", Description="the Nodes", VpcId=network["vpc"]
        )["GroupId"]
        console.ec2.create_tags(
            Resources=[group], Tags=[{"Key": "kubernetes.io/cluster/bench", "Value": "owned"}]
        )
        nodes = []
        for i in range(args.nodes):
            inst = console.run_instance(subnets[i % 2], cluster_id="bench", security_groups=[group])
            zone = inst["Placement"]["AvailabilityZone"]
            spec = {"providerID": f"aws:///{zone}/{inst['InstanceId']}"}
            nodes.append(Node({"metadata": {"name": inst["PrivateDnsName"]}, "spec": spec}))
        results = asyncio.run(measure(moto.url, nodes, args.rounds))
    print(f"{args.rounds} rounds, {args.nodes} Nodes, a two-port Service, moto on 127.0.0.1")
    print(f"{'step':12} {'AWS calls':>9} {'median s':>9} {'max s':>7}")
    for what, samples in results.items():
        counts = sorted({c for c, _ in samples})
        seconds = [s for _, s in samples]
        shown = "/".join(str(c) for c in counts)
        print(f"{what:12} {shown:>9} {statistics.median(seconds):9.3f} {max(seconds):7.3f}")


if __name__ == "__main__":
    main()
