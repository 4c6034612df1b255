"""The conformance driver example of docs/providers.md, extracted from the page and run against
an in-memory stand-in for "your cloud's own client"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ccm.testing.conformance.driver import CloudRoute, ConformanceDriver, Machine

DOC = Path(__file__).resolve().parents[3] / "docs" / "providers.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    (code,) = [b for b in blocks if "class MyCloudDriver(" in b]
    return code


class CloudAPI:
    """What the example's driver calls: a cloud with VMs, load balancers and routes."""

    def __init__(self) -> None:
        self.vms: dict[str, dict[str, Any]] = {}
        self.lbs = [{"name": "a1b2", "ips": ["192.0.2.7"], "backends": ["n1"]}]
        self.route_table = {"c1": [{"id": "r-1", "node": "n1", "cidr": "10.244.1.0/24"}]}
        self.closed = False

    async def create_vm(self, name: str) -> dict[str, Any]:
        vm = {"id": f"i-{len(self.vms)}", "ip": f"10.0.0.{len(self.vms) + 2}", "type": "m.small"}
        self.vms[name] = {**vm, "zone": "z1", "region": "r1", "running": True}
        return self.vms[name]

    async def stop_vm(self, name: str) -> None:
        self.vms[name]["running"] = False

    async def start_vm(self, name: str) -> None:
        self.vms[name]["running"] = True

    async def delete_vm(self, name: str, *, missing_ok: bool = False) -> None:
        if name not in self.vms and not missing_ok:
            raise KeyError(name)
        self.vms.pop(name, None)

    async def list_load_balancers(self) -> list[dict[str, Any]]:
        return self.lbs

    async def list_routes(self, *, cluster: str) -> list[dict[str, str]]:
        return self.route_table.get(cluster, [])

    async def close(self) -> None:
        self.closed = True


class Provider:
    def __init__(self) -> None:
        self.api = CloudAPI()


async def test_the_documented_driver_builds_runs_and_cleans_up() -> None:
    namespace: dict[str, Any] = {"__name__": "mycloud_driver_example"}
    exec(compile(_example(), str(DOC), "exec"), namespace)
    provider = Provider()
    driver = namespace["driver_factory"](provider)
    assert isinstance(driver, ConformanceDriver)

    machine = await driver.create_machine("n1")
    assert isinstance(machine, Machine)
    assert machine.provider_id == "mycloud://i-0"
    assert driver.machines == {"n1": machine}
    await driver.create_machine("n2")
    await driver.stop_machine("n1")
    assert provider.api.vms["n1"]["running"] is False
    await driver.start_machine("n1")
    await driver.delete_machine("n2")
    await driver.delete_machine("n2")  # idempotent
    assert set(driver.machines) == {"n1"}

    routes = await driver.routes("c1")
    assert routes == [
        CloudRoute(
            cluster_name="c1", target_node="n1", destination_cidr="10.244.1.0/24", name="r-1"
        )
    ]
    assert await driver.routes("other") == []
    (lb,) = await driver.load_balancers()
    assert (lb.name, lb.nodes) == ("a1b2", ("n1",))

    await driver.cleanup()
    assert provider.api.vms == {}
    assert driver.machines == {}
    assert provider.api.closed
