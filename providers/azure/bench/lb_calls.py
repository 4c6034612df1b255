"""ARM requests and wall time of N LoadBalancer Services ensured at once on the shared load
balancer, then deleted at once, on the fake ARM server (TLS, real SDK clients): what the etag
read-modify-writes of the load balancer and security group cost.

    .venv/bin/python providers/azure/bench/lb_calls.py 20
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from ccm_azure.provider import factory
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld, azure_json

from ccm.cloudprovider import Node, Service


def service(i: int) -> Service:
    return Service(
        {
            "metadata": {"name": f"web{i}", "namespace": "bench", "uid": f"{i:08d}-bench"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}]},
        }
    )


async def main(count: int) -> None:
    async with FakeArm() as arm:
        os.environ["SSL_CERT_FILE"] = str(arm.ca_path)
        AzureWorld(arm).create_security_group()
        provider = factory(azure_json(arm).encode())
        await provider.api.open()
        lbs = provider.load_balancer()
        addresses = [{"type": "InternalIP", "address": f"10.0.0.{i + 4}"} for i in range(3)]
        nodes = [
            Node({"metadata": {"name": f"n{i}"}, "status": {"addresses": [a]}})
            for i, a in enumerate(addresses)
        ]
        services = [service(i) for i in range(count)]
        for label, run in (
            ("ensure", lambda s: lbs.ensure_load_balancer("k8s", s, nodes)),
            ("delete", lambda s: lbs.ensure_load_balancer_deleted("k8s", s)),
        ):
            arm.calls.clear()
            start = time.perf_counter()
            await asyncio.gather(*(run(s) for s in services))
            elapsed = time.perf_counter() - start
            total = sum(arm.calls.values())
            print(
                f"{label} {count} Services at once: {total:4} ARM requests "
                f"({total / count:.1f} per Service), {elapsed:.2f}s"
            )
        await provider.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
