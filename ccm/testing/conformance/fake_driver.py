""":class:`FakeCloudDriver`: the conformance driver of the fake provider.

Two modes:

* in-process (``FakeCloudDriver(cloud)``): acts on a :class:`~ccm.testing.fake_cloud.FakeCloud`
  object directly (its instance table, load balancers and route table) — what the CLI and the
  pytest plugin use, since the suite runs the provider in-process;
* files (``FakeCloudDriver.for_files(state_file, status_file)``): for a fake provider running in a
  ``ccm`` daemon, machines are written to the daemon's state file with
  :class:`~ccm.testing.fake_cloud.FakeCloudState` and load balancers / routes are read back from
  its status file with :class:`~ccm.testing.fake_cloud.FakeCloudStatus`.

A deleted machine is kept in the table with ``exists: false``: the fake's ``defaultInstance``
answers every unknown name, so removing the entry would bring the machine "back".
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from ccm.cloudprovider import CloudProvider, NodeAddress
from ccm.testing.conformance.driver import (
    CloudLoadBalancer,
    CloudRoute,
    ConformanceDriverBase,
    Machine,
)
from ccm.testing.fake_cloud import FakeCloud, FakeCloudState, FakeCloudStatus

__all__ = ["FakeCloudDriver", "fake_driver_factory"]


def _address(seed: str, generation: int) -> str:
    digest = int.from_bytes(hashlib.sha256(f"{seed}/{generation}".encode()).digest()[:4], "big")
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.128.0.0")) + digest % 65000 + 2))


class FakeCloudDriver(ConformanceDriverBase):
    """Creates, stops, starts, deletes machines of the fake cloud; inspects its LBs and routes."""

    def __init__(
        self,
        cloud: FakeCloud | None = None,
        *,
        state_file: str | Path | None = None,
        status_file: str | Path | None = None,
        provider_name: str = "fake",
    ) -> None:
        super().__init__()
        if cloud is None and state_file is None:
            raise ValueError("FakeCloudDriver needs a FakeCloud or a state file")
        self.cloud = cloud
        self.state_file = Path(state_file) if state_file is not None else None
        self.status_file = Path(status_file) if status_file is not None else None
        self.provider_name = cloud.name if cloud is not None else provider_name
        self._generation: dict[str, int] = {}
        self._state: FakeCloudState | None = None
        if self.state_file is not None:
            self._state = (
                FakeCloudState.load(self.state_file)
                if self.state_file.exists()
                else FakeCloudState()
            )

    @classmethod
    def for_files(
        cls, state_file: str | Path, status_file: str | Path, *, provider_name: str = "fake"
    ) -> FakeCloudDriver:
        """A driver for a fake provider running in a daemon (``stateFile`` / ``statusFile``)."""
        return cls(state_file=state_file, status_file=status_file, provider_name=provider_name)

    # ---- machines

    def _addresses(self, name: str) -> tuple[NodeAddress, ...]:
        generation = self._generation.get(name, 0)
        return (
            NodeAddress(type="InternalIP", address=_address(name, generation)),
            NodeAddress(type="Hostname", address=name),
        )

    def _write(self, name: str, **fields: object) -> None:
        if self.cloud is not None:
            instance = self.cloud.instance_table.get(name)
            if instance is None:
                raise KeyError(f"no machine {name!r}")
            for key, value in fields.items():
                setattr(instance, key, value)
            return
        assert self._state is not None
        assert self.state_file is not None
        renamed = {"provider_id": "providerID", "instance_type": "instanceType"}
        changes = {renamed.get(k, k): v for k, v in fields.items()}
        if "addresses" in changes:
            changes["addresses"] = [a.to_dict() for a in changes["addresses"]]  # type: ignore[attr-defined]
        self._state.update_instance(name, **changes)
        self._state.write(self.state_file)

    async def create_machine(self, name: str) -> Machine:
        provider_id = f"{self.provider_name}://i-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
        machine = Machine(
            name=name,
            provider_id=provider_id,
            addresses=self._addresses(name),
            instance_type="conformance.small",
            zone="conformance-zone-a",
            region="conformance-region",
            labels={"conformance.ccm.io/machine": "yes"},
        )
        fields = {
            "provider_id": provider_id,
            "instance_type": machine.instance_type,
            "zone": machine.zone,
            "region": machine.region,
            "labels": dict(machine.labels),
        }
        if self.cloud is not None:
            self.cloud.add_instance(name, addresses=machine.addresses, **fields)  # type: ignore[arg-type]
        else:
            assert self._state is not None
            assert self.state_file is not None
            self._state.add_instance(
                name,
                providerID=provider_id,
                instanceType=machine.instance_type,
                zone=machine.zone,
                region=machine.region,
                labels=dict(machine.labels),
                addresses=[a.to_dict() for a in machine.addresses],
            )
            self._state.write(self.state_file)
        self.machines[name] = machine
        return machine

    async def stop_machine(self, name: str) -> None:
        self._write(name, shutdown=True)

    async def start_machine(self, name: str) -> None:
        self._write(name, shutdown=False)

    async def delete_machine(self, name: str) -> None:
        if name in self.machines:
            self._write(name, exists=False)

    async def change_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        self._generation[name] = self._generation.get(name, 0) + 1
        addresses = self._addresses(name)
        self._write(name, addresses=addresses)
        return addresses

    async def cleanup(self) -> None:
        for name in list(self.machines):
            if self.cloud is not None:
                self.cloud.remove_instance(name)
            elif self._state is not None and self.state_file is not None:
                self._state.remove_instance(name)
                self._state.write(self.state_file)
            self.machines.pop(name, None)

    # ---- inspection (independent of the provider's own get/list)

    def _status(self) -> FakeCloudStatus | None:
        if self.status_file is None:
            return None
        return FakeCloudStatus.read(self.status_file)

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        if self.cloud is not None:
            return [
                CloudLoadBalancer(
                    name=lb.name, service=lb.service, ips=(lb.ip,) if lb.ip else (), nodes=lb.nodes
                )
                for lb in self.cloud.load_balancers.values()
            ]
        status = self._status()
        if status is None:
            return None
        return [
            CloudLoadBalancer(
                name=lb.name,
                service=lb.service,
                ips=(lb.ip,) if lb.ip else (),
                nodes=tuple(lb.nodes),
            )
            for lb in status.load_balancers.values()
        ]

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        if self.cloud is not None:
            return [
                CloudRoute(
                    cluster_name=cluster_name,
                    target_node=r.target_node,
                    destination_cidr=r.destination_cidr,
                    name=r.name,
                )
                for r in self.cloud.route_table.get(cluster_name, {}).values()
            ]
        status = self._status()
        if status is None:
            return None
        return [
            CloudRoute(
                cluster_name=cluster_name,
                target_node=r.target_node,
                destination_cidr=r.destination_cidr,
                name=r.name,
            )
            for r in status.routes.get(cluster_name, [])
        ]


def fake_driver_factory(provider: CloudProvider) -> FakeCloudDriver:
    """``--driver ccm.testing.conformance.fake_driver:fake_driver_factory`` (the CLI default for the
    fake provider): drive the in-process FakeCloud the suite built, or any wrapper exposing it as
    ``.inner`` / ``.cloud``."""
    cloud: object = provider
    for _ in range(5):
        if isinstance(cloud, FakeCloud):
            return FakeCloudDriver(cloud)
        cloud = getattr(cloud, "inner", None) or getattr(cloud, "cloud", None)
    raise TypeError(f"{type(provider).__name__} is not a FakeCloud (nor wraps one)")
