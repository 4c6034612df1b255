"""The fake cloud provider :class:`FakeCloud` and its entry point ``fake``.

:class:`FakeCloud` is built in layers, one module each, every layer using only those below it:
:class:`~ccm.testing.fake_cloud.core.FakeCloudCore` (settings, instances, faults and the in-process
mutators), :class:`~ccm.testing.fake_cloud.files.FakeCloudFiles` (the state and status files),
:class:`~ccm.testing.fake_cloud.calls.FakeCloudCalls` (the prologue of every call, the recorded
calls, the lifecycle), :class:`~ccm.testing.fake_cloud.instances.FakeCloudInstances` and
:class:`~ccm.testing.fake_cloud.network.FakeCloudNetwork` (the capabilities), and this module
(construction from a config document, the capability accessors, Clusters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ccm.cloudprovider import (
    Clusters,
    Instances,
    InstancesBatch,
    InstancesV2,
    LoadBalancer,
    Routes,
    Zone,
    Zones,
)
from ccm.testing.fake_cloud.documents import FakeCloudConfig, FakeCloudStateSpec, _validate_config
from ccm.testing.fake_cloud.model import FakeCapabilities
from ccm.testing.fake_cloud.network import FakeCloudNetwork

_STATE_SECTIONS: tuple[str, ...] = tuple(FakeCloudStateSpec.model_fields)


class FakeCloud(FakeCloudNetwork):
    """An in-memory cloud implementing every capability of the contract (see
    :mod:`ccm.testing.fake_cloud`).

    The capability objects are the provider itself; each accessor returns ``self``, or None when
    switched off in ``capabilities``.
    """

    name = "fake"

    # ---- construction from a config document

    @classmethod
    def from_config(
        cls, config: bytes | str | Mapping[str, Any] | FakeCloudConfig | None
    ) -> FakeCloud:
        """Build a fake from a config document: YAML/JSON bytes or text, a mapping, or a parsed one.

        Raises ConfigError with one line naming the problem.
        """
        cfg = config if isinstance(config, FakeCloudConfig) else _validate_config(config)
        caps = cfg.capabilities
        lb = cfg.load_balancer
        cloud = cls(
            provider_name=cfg.provider_name,
            capabilities=FakeCapabilities(
                instances_v2=caps.instances_v2,
                instances=caps.instances,
                zones=caps.zones,
                load_balancer=caps.load_balancer,
                routes=caps.routes,
                clusters=caps.clusters,
                instances_batch=caps.instances_batch,
            ),
            max_batch_size=cfg.max_batch_size,
            ip_pool=lb.ip_pool,
            ip_mode=lb.ip_mode,
            reject_protocols=lb.reject_protocols,
            report_port_status=lb.report_ports,
            local_zone=Zone(
                failure_domain=cfg.local_zone.failure_domain, region=cfg.local_zone.region
            ),
            cluster_names=cfg.clusters.names,
            master_address=cfg.clusters.master,
            cluster_id=cfg.has_cluster_id,
            routes_enable_node_addresses=cfg.routes_enable_node_addresses,
            routes_auto_blackhole=cfg.routes_auto_blackhole,
            record_calls=cfg.record_calls,
            state_file=cfg.state_file,
            status_file=cfg.status_file,
            status_interval=cfg.status_interval,
            restore_from_status=cfg.restore_from_status,
            shared_status=cfg.shared_status,
        )
        for section in _STATE_SECTIONS:
            if section in cfg.model_fields_set:
                cloud._apply_section(section, cfg)
        if cloud.state_file is not None:
            cloud._reload_state(strict=True)
        return cloud

    async def reload(self, config: bytes) -> None:
        """The contract's optional reload hook: apply a new ``--cloud-config`` document's state
        sections (``instances``, ``defaultInstance``, ...) and ``recordCalls``; the other
        settings keep their start-up values. A malformed document raises ConfigError and changes
        nothing. Each reload applied is counted in :attr:`config_reloads`."""
        cfg = _validate_config(config)
        for section in _STATE_SECTIONS:
            if section in cfg.model_fields_set:
                self._apply_section(section, cfg)
        self.record_calls = cfg.record_calls
        self.config_reloads += 1

    # ---- capability accessors

    def has_cluster_id(self) -> bool:
        return self.cluster_id

    def instances_v2(self) -> InstancesV2 | None:
        return self if self.capabilities.instances_v2 else None

    def instances(self) -> Instances | None:
        return self if self.capabilities.instances else None

    def instances_batch(self) -> InstancesBatch | None:
        return self if self.capabilities.instances_batch else None

    def zones(self) -> Zones | None:
        return self if self.capabilities.zones else None

    def load_balancer(self) -> LoadBalancer | None:
        return self if self.capabilities.load_balancer else None

    def routes(self) -> Routes | None:
        return self if self.capabilities.routes else None

    def clusters(self) -> Clusters | None:
        return self if self.capabilities.clusters else None

    # ---- Clusters

    async def list_clusters(self) -> Sequence[str]:
        await self._call("list-clusters", "")
        return tuple(self.cluster_names)

    async def master(self, cluster_name: str) -> str:
        await self._call("master", cluster_name)
        return self.master_address


def FakeCloudFactory(config: bytes | None) -> FakeCloud:
    """The ``fake`` entry point: a :class:`FakeCloud` from ``--cloud-config`` bytes (or None)."""
    return FakeCloud.from_config(config)
