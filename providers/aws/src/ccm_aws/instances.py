"""InstancesV2 and InstancesBatch over EC2 DescribeInstances.

Ports ``instances_v2.go`` and the instance look-ups of ``aws.go`` (``InstanceExistsByProviderID``,
``InstanceShutdownByProviderID``, ``getInstanceByNodeName``, ``getInstanceNodeAddress``):

- a Node's instance is found by its providerID (``aws:///<zone>/<id>``); without one, by its name:
  a name starting with ``i-`` is an instance ID (up to the first dot), any other name is a private
  DNS name (instances not terminated, of this cluster);
- **exists**: ``False`` when EC2 answers ``InvalidInstanceID.NotFound``, returns nothing, or the
  instance is ``terminated``; a stopped instance exists. A malformed providerID raises (it names
  no instance: never "gone"), and so does a Node without providerID whose name finds nothing;
- **shutdown**: ``True`` exactly when the instance is ``stopped``;
- **metadata**: providerID, instance type, zone (the availability zone), region (the provider's),
  the addresses of :func:`ccm_aws.addresses.node_addresses`, and the zone-ID label
  ``topology.k8s.aws/zone-id`` when the Node lacks it. One deliberate difference: a terminated
  instance raises InstanceNotFoundError (upstream still returns its metadata while EC2 lists it).

The batch methods answer many Nodes with one paginated DescribeInstances per kind of look-up
(``instance-id`` filter for Nodes with a providerID or an instance-ID name, ``private-dns-name``
for the others): a filter, unlike ``InstanceIds``, does not fail the whole call for one missing
instance. Each answer means exactly what the single call returns or raises for that Node.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ccm.cloudprovider import InstanceMetadata, Node
from ccm.errors import CloudProviderError, InstanceNotFoundError
from ccm_aws import addresses
from ccm_aws.api import AWSApi, iter_instances
from ccm_aws.tags import ClusterTagging

__all__ = ["ALIVE_STATES", "LABEL_ZONE_ID", "AWSInstances"]

_log = logging.getLogger("ccm_aws")

#: Upstream ``LabelZoneID``.
LABEL_ZONE_ID = "topology.k8s.aws/zone-id"
#: Upstream ``aliveFilter``: every state but terminated.
ALIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
#: Values per DescribeInstances filter (EC2 accepts 200).
FILTER_VALUES = 200
#: The instance IDs EC2 issues; other ``i-...`` IDs are looked up one by one, as upstream does,
#: so that EC2's own answer (``InvalidInstanceID.Malformed``) is what the Node gets.
_WELL_FORMED_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

Instance = dict[str, Any]


def _state(instance: Mapping[str, Any]) -> str:
    return str((instance.get("State") or {}).get("Name", ""))


class _ByID:
    """A Node looked up by instance ID; ``by_name``: it has no providerID."""

    __slots__ = ("by_name", "instance_id")

    def __init__(self, instance_id: str, *, by_name: bool) -> None:
        self.instance_id = instance_id
        self.by_name = by_name


class _ByDNS:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_Lookup = _ByID | _ByDNS


class AWSInstances:
    """InstancesV2 + InstancesBatch of the AWS provider."""

    max_batch_size = 500
    #: Instances per page of the filtered DescribeInstances of the batch calls (5..1000).
    page_size = 1000

    def __init__(
        self, api: AWSApi, tagging: ClusterTagging, *, families: Sequence[str] = ("ipv4",)
    ) -> None:
        self.api = api
        self.tagging = tagging
        self.families = tuple(families)
        self._zone_ids: dict[str, str] = {}
        self._zone_lock = asyncio.Lock()
        #: Instance ID → name of the Node it was last found for, and the reverse (routes).
        self.node_names: dict[str, str] = {}
        self._ids_by_node: dict[str, str] = {}

    def _remember(self, node: Node, instance: Instance | None) -> None:
        if instance is not None and node.name and instance.get("InstanceId"):
            self.node_names[str(instance["InstanceId"])] = node.name
            self._ids_by_node[node.name] = str(instance["InstanceId"])

    async def instance_id_for_node_name(self, name: str) -> str:
        """The instance of Node ``name`` (upstream ``getInstanceByNodeName``): the one last found
        for a Node of that name, else looked up by the name."""
        known = self._ids_by_node.get(name)
        if known is not None:
            return known
        view = Node({"metadata": {"name": name}})
        _, instance = await self._find(view)
        if instance is None:
            raise self._no_instance(view)
        return str(instance["InstanceId"])

    async def by_ids(self, ids: Sequence[str]) -> dict[str, Instance]:
        """Instances by ID, missing ones left out (one filtered call per 200 IDs)."""
        return await self._by_ids(ids)

    # -- look-ups --------------------------------------------------------------------------------

    @staticmethod
    def _lookup(node: Node) -> _Lookup:
        if node.provider_id:
            try:
                return _ByID(
                    addresses.instance_id_from_provider_id(node.provider_id), by_name=False
                )
            except ValueError as exc:
                raise CloudProviderError(
                    f"node {node.name}: malformed providerID {node.provider_id!r}: {exc}"
                ) from None
        if node.name.startswith("i-"):
            return _ByID(node.name.split(".", 1)[0], by_name=True)
        if not node.name:
            raise CloudProviderError("no nodeName provided")
        return _ByDNS(node.name)

    async def _by_id(self, instance_id: str) -> Instance | None:
        """Upstream ``describeInstance``: ``None`` when EC2 lists no such instance; raises
        InstanceNotFoundError on ``InvalidInstanceID.NotFound``."""
        reservations = await self.api.paginate(
            "ec2", "describe_instances", "Reservations", InstanceIds=[instance_id]
        )
        found = [i for i in iter_instances(reservations) if i.get("InstanceId") == instance_id]
        if len(found) > 1:
            raise CloudProviderError(f"multiple instances found for instance: {instance_id}")
        return found[0] if found else None

    async def _by_dns_names(self, names: Sequence[str]) -> dict[str, list[Instance]]:
        """Instances not terminated of this cluster whose private DNS name is in ``names``."""
        out: dict[str, list[Instance]] = {}
        for start in range(0, len(names), FILTER_VALUES):
            chunk = list(names[start : start + FILTER_VALUES])
            reservations = await self.api.paginate(
                "ec2",
                "describe_instances",
                "Reservations",
                page_size=self.page_size,
                Filters=[
                    {"Name": "private-dns-name", "Values": chunk},
                    {"Name": "instance-state-name", "Values": list(ALIVE_STATES)},
                ],
            )
            for instance in iter_instances(reservations):
                if self.tagging.has_cluster_tag(instance.get("Tags") or ()):
                    out.setdefault(str(instance.get("PrivateDnsName", "")), []).append(instance)
        return out

    async def _by_ids(self, ids: Sequence[str]) -> dict[str, Instance]:
        out: dict[str, Instance] = {}
        for start in range(0, len(ids), FILTER_VALUES):
            chunk = list(ids[start : start + FILTER_VALUES])
            reservations = await self.api.paginate(
                "ec2",
                "describe_instances",
                "Reservations",
                page_size=self.page_size,
                Filters=[{"Name": "instance-id", "Values": chunk}],
            )
            for instance in iter_instances(reservations):
                out[str(instance["InstanceId"])] = instance
        return out

    async def _find(self, node: Node) -> tuple[_Lookup, Instance | None]:
        """The Node's instance (``None``: EC2 lists none). InstanceNotFoundError propagates from
        an ID EC2 does not know."""
        lookup = self._lookup(node)
        if isinstance(lookup, _ByID):
            instance = await self._by_id(lookup.instance_id)
        else:
            found = (await self._by_dns_names([lookup.name])).get(lookup.name, [])
            if len(found) > 1:
                raise CloudProviderError(f"multiple instances found for name: {lookup.name}")
            instance = found[0] if found else None
        self._remember(node, instance)
        return lookup, instance

    @staticmethod
    def _no_instance(node: Node) -> InstanceNotFoundError:
        return InstanceNotFoundError(f"no EC2 instance found for node {node.name}")

    # -- answers from an instance (shared by the single and the batch calls) ---------------------

    def _exists(self, node: Node, lookup: _Lookup, instance: Instance | None) -> bool:
        if instance is None:
            if isinstance(lookup, _ByID) and not lookup.by_name:
                return False
            raise self._no_instance(node)
        if not instance.get("State"):
            _log.warning("the instance %s has nil state, assuming it no longer exists", node.name)
            return False
        if _state(instance) == "terminated":
            _log.warning("the instance of node %s is terminated", node.name)
            return False
        return True

    def _shutdown(self, node: Node, lookup: _Lookup, instance: Instance | None) -> bool:
        if instance is None:
            if isinstance(lookup, _ByID) and not lookup.by_name:
                return False
            raise self._no_instance(node)
        return _state(instance) == "stopped"

    def _metadata(
        self, node: Node, instance: Instance | None, zone_ids: Mapping[str, str]
    ) -> InstanceMetadata:
        if instance is None or _state(instance) == "terminated":
            raise self._no_instance(node)
        zone = str(instance.get("Placement", {}).get("AvailabilityZone", ""))
        labels: dict[str, str] = {}
        if LABEL_ZONE_ID not in node.labels and zone in zone_ids:
            labels[LABEL_ZONE_ID] = zone_ids[zone]
        return InstanceMetadata(
            provider_id=node.provider_id or addresses.provider_id(instance),
            instance_type=str(instance.get("InstanceType", "")),
            node_addresses=addresses.node_addresses(instance, self.families),
            zone=zone,
            region=self.api.region,
            additional_labels=labels,
        )

    async def _zone_ids_for(self, zones: set[str]) -> dict[str, str]:
        """Zone name → zone ID (upstream ``zoneCache``): one DescribeAvailabilityZones, again
        only when a zone is missing."""
        async with self._zone_lock:
            if zones - set(self._zone_ids):
                answer = await self.api.call("ec2", "describe_availability_zones")
                for zone in answer.get("AvailabilityZones") or ():
                    if zone.get("ZoneName") and zone.get("ZoneId"):
                        self._zone_ids[str(zone["ZoneName"])] = str(zone["ZoneId"])
            missing = zones - set(self._zone_ids)
            if missing:
                raise CloudProviderError(f"could not find zone ID of zone {sorted(missing)[0]}")
            return dict(self._zone_ids)

    async def _zone_ids_of(self, nodes_and_instances: Sequence[tuple[Node, Any]]) -> dict[str, str]:
        zones = {
            str(i.get("Placement", {}).get("AvailabilityZone", ""))
            for node, i in nodes_and_instances
            if isinstance(i, dict) and LABEL_ZONE_ID not in node.labels
        }
        zones.discard("")
        return await self._zone_ids_for(zones) if zones else {}

    # -- InstancesV2 -----------------------------------------------------------------------------

    async def instance_exists(self, node: Node) -> bool:
        lookup = self._lookup(node)
        try:
            lookup, instance = await self._find(node)
        except InstanceNotFoundError:
            if isinstance(lookup, _ByID) and not lookup.by_name:
                return False
            raise
        return self._exists(node, lookup, instance)

    async def instance_shutdown(self, node: Node) -> bool:
        lookup, instance = await self._find(node)
        return self._shutdown(node, lookup, instance)

    async def instance_metadata(self, node: Node) -> InstanceMetadata:
        _, instance = await self._find(node)
        zone_ids = await self._zone_ids_of([(node, instance)])
        return self._metadata(node, instance, zone_ids)

    # -- InstancesBatch --------------------------------------------------------------------------

    async def _find_many(
        self, nodes: Sequence[Node]
    ) -> list[tuple[_Lookup, Instance | None] | Exception]:
        """Per Node what :meth:`_find` returns or raises, with one look-up per kind."""
        lookups: list[_Lookup | Exception] = []
        for node in nodes:
            try:
                lookups.append(self._lookup(node))
            except CloudProviderError as exc:
                lookups.append(exc)
        ids = sorted(
            {
                x.instance_id
                for x in lookups
                if isinstance(x, _ByID) and _WELL_FORMED_ID.match(x.instance_id)
            }
        )
        names = sorted({x.name for x in lookups if isinstance(x, _ByDNS)})
        by_id = await self._by_ids(ids) if ids else {}
        by_name = await self._by_dns_names(names) if names else {}
        out: list[tuple[_Lookup, Instance | None] | Exception] = []
        for node, lookup in zip(nodes, lookups, strict=True):
            if isinstance(lookup, Exception):
                out.append(lookup)
            elif isinstance(lookup, _ByDNS):
                found = by_name.get(lookup.name, [])
                if len(found) > 1:
                    out.append(
                        CloudProviderError(f"multiple instances found for name: {lookup.name}")
                    )
                else:
                    self._remember(node, found[0] if found else None)
                    out.append((lookup, found[0] if found else None))
            elif _WELL_FORMED_ID.match(lookup.instance_id):
                instance = by_id.get(lookup.instance_id)
                if instance is None:
                    # What DescribeInstances(InstanceIds=[id]) answers for an unknown ID.
                    out.append(InstanceNotFoundError(f"{lookup.instance_id} not found"))
                else:
                    self._remember(node, instance)
                    out.append((lookup, instance))
            else:
                try:
                    out.append(await self._find(node))
                except CloudProviderError as exc:
                    out.append(exc)
        return out

    async def instance_exists_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        answers: list[bool | Exception] = []
        for node, found in zip(nodes, await self._find_many(nodes), strict=True):
            if isinstance(found, InstanceNotFoundError):
                lookup = self._lookup(node)
                if isinstance(lookup, _ByID) and not lookup.by_name:
                    answers.append(False)
                    continue
            if isinstance(found, Exception):
                answers.append(found)
                continue
            try:
                answers.append(self._exists(node, *found))
            except CloudProviderError as exc:
                answers.append(exc)
        return answers

    async def instance_shutdown_batch(self, nodes: Sequence[Node]) -> Sequence[bool | Exception]:
        answers: list[bool | Exception] = []
        for node, found in zip(nodes, await self._find_many(nodes), strict=True):
            if isinstance(found, Exception):
                answers.append(found)
                continue
            try:
                answers.append(self._shutdown(node, *found))
            except CloudProviderError as exc:
                answers.append(exc)
        return answers

    async def instance_metadata_batch(
        self, nodes: Sequence[Node]
    ) -> Sequence[InstanceMetadata | Exception | None]:
        found_all = await self._find_many(nodes)
        pairs = [
            (node, found[1])
            for node, found in zip(nodes, found_all, strict=True)
            if not isinstance(found, Exception)
        ]
        zone_ids = await self._zone_ids_of(pairs)
        answers: list[InstanceMetadata | Exception | None] = []
        for node, found in zip(nodes, found_all, strict=True):
            if isinstance(found, Exception):
                answers.append(found)
                continue
            try:
                answers.append(self._metadata(node, found[1], zone_ids))
            except CloudProviderError as exc:
                answers.append(exc)
        return answers
