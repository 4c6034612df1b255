"""AWS API calls per Node, single calls against InstancesBatch, measured on moto.

``python providers/aws/bench/calls.py --nodes 1000`` launches that many instances in moto's EC2
(in-process server, 127.0.0.1), builds the provider from its entry point's factory and counts the
AWS requests of answering every Node's three InstancesV2 questions (metadata, exists, shutdown):
one call per Node and question, then the batch methods over all Nodes (the node controller
coalesces concurrent ``instance_metadata`` requests into ``instance_metadata_batch``; the
lifecycle controller asks ``instance_exists_batch`` and ``instance_shutdown_batch`` per sweep).
Half the Nodes carry a providerID, half are found by their private DNS name.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from ccm_aws.provider import factory
from ccm_aws.testing import (
    LINUX_AMI,
    Ec2Console,
    MotoServer,
    aws_test_env,
    cloud_config,
    patched_environ,
)

from ccm.cloudprovider import Node


def launch(console: Ec2Console, subnets: list[str], count: int) -> list[dict[str, Any]]:
    """``count`` running instances tagged for the cluster ``bench``, spread over ``subnets``
    (one RunInstances per subnet)."""
    tags = [{"Key": "kubernetes.io/cluster/bench", "Value": "owned"}]
    ids: list[str] = []
    for n, subnet in enumerate(subnets):
        share = count // len(subnets) + (1 if n < count % len(subnets) else 0)
        if share:
            launched = console.ec2.run_instances(
                ImageId=LINUX_AMI,
                MinCount=share,
                MaxCount=share,
                InstanceType="t3.medium",
                SubnetId=subnet,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
            ids += [i["InstanceId"] for i in launched["Instances"]]
    found = console.ec2.get_paginator("describe_instances").paginate(InstanceIds=ids)
    by_id = {
        i["InstanceId"]: i for page in found for r in page["Reservations"] for i in r["Instances"]
    }
    return [by_id[i] for i in ids]


async def measure(url: str, nodes: list[Node]) -> dict[str, tuple[Counter[str], float]]:
    provider = await factory(cloud_config(url, KubernetesClusterID="bench").encode())
    calls: Counter[str] = Counter()
    provider.api.observe(lambda model, **_: calls.update([model.name]))
    v2, batch = provider.instances_v2(), provider.instances_batch()
    out: dict[str, tuple[Counter[str], float]] = {}
    try:
        for question in ("instance_metadata", "instance_exists", "instance_shutdown"):
            calls.clear()
            started = time.monotonic()
            for node in nodes:
                await getattr(v2, question)(node)
            out[f"{question} (single)"] = (Counter(calls), time.monotonic() - started)
            calls.clear()
            started = time.monotonic()
            answers = await getattr(batch, f"{question}_batch")(nodes)
            assert not [a for a in answers if isinstance(a, Exception)], answers
            out[f"{question}_batch"] = (Counter(calls), time.monotonic() - started)
    finally:
        await provider.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    args = parser.parse_args()
    with patched_environ(aws_test_env()), MotoServer() as moto:
        console = Ec2Console(moto.url)
        network = console.create_network("bench", cidr="10.77.0.0/16")
        subnets = list(network["subnets"].values())
        instances = launch(console, subnets, args.nodes)
        nodes = []
        for i, inst in enumerate(instances):
            spec = {}
            if i % 2 == 0:
                zone = inst["Placement"]["AvailabilityZone"]
                spec = {"providerID": f"aws:///{zone}/{inst['InstanceId']}"}
            nodes.append(Node({"metadata": {"name": inst["PrivateDnsName"]}, "spec": spec}))
        results = asyncio.run(measure(moto.url, nodes))
    print(f"{args.nodes} Nodes (half by providerID, half by private DNS name), moto on 127.0.0.1")
    print(f"{'question':34} {'AWS calls':>9} {'per Node':>9} {'seconds':>8}")
    for what, (calls, seconds) in results.items():
        total = sum(calls.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        print(f"{what:34} {total:9d} {total / args.nodes:9.3f} {seconds:8.2f}  ({detail})")


if __name__ == "__main__":
    main()
