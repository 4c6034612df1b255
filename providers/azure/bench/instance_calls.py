"""ARM requests and wall time of the Azure provider's instance calls for N VMs (or N scale set
instances in two scale sets, ``vmss``) on the fake ARM server (TLS, real SDK clients, real
bearer-token policy): single InstancesV2 calls against one InstancesBatch call.

    .venv/bin/python providers/azure/bench/instance_calls.py 100
    .venv/bin/python providers/azure/bench/instance_calls.py 100 vmss
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from ccm_azure.provider import factory
from ccm_azure.testing.arm import FakeArm
from ccm_azure.testing.world import AzureWorld, azure_json

from ccm.cloudprovider import Node


async def main(count: int, vmss: bool) -> None:
    async with FakeArm() as arm:
        os.environ["SSL_CERT_FILE"] = str(arm.ca_path)
        world = AzureWorld(arm)
        nodes = []
        for i in range(count):
            if vmss:
                vm = world.create_vmss_vm(f"pool{i % 2}", str(i), zone=str(i % 3 + 1))
                pid = "azure://" + vm["id"]
                nodes.append(Node({"metadata": {"name": f"n{i}"}, "spec": {"providerID": pid}}))
            else:
                world.create_vm(f"vm-{i}", zone=str(i % 3 + 1))
                nodes.append(Node({"metadata": {"name": f"vm-{i}"}, "spec": {}}))
        vm_type = "vmss" if vmss else "standard"
        provider = factory(azure_json(arm, vmType=vm_type).encode())
        await provider.api.open()
        instances, batch = provider.instances_v2(), provider.instances_batch()
        await instances.instance_exists(nodes[0])  # the token, the connection
        for label, run in (
            ("single instance_metadata", lambda: asyncio.gather(
                *(instances.instance_metadata(n) for n in nodes))),
            ("batch instance_metadata", lambda: batch.instance_metadata_batch(nodes)),
            ("single instance_exists", lambda: asyncio.gather(
                *(instances.instance_exists(n) for n in nodes))),
            ("batch instance_exists", lambda: batch.instance_exists_batch(nodes)),
        ):  # fmt: skip
            arm.calls.clear()
            start = time.perf_counter()
            await run()
            elapsed = time.perf_counter() - start
            print(
                f"{label:26} {count} Nodes: {sum(arm.calls.values()):4} ARM requests, "
                f"{elapsed:.2f}s"
            )
        await provider.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, "vmss" in sys.argv[2:]))
