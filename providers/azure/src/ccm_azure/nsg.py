"""Network security group rules for the load balancers' frontends, as upstream writes them.

Upstream (cloud-provider-azure) shares its allow rules between Services: a rule is named after
what it allows, ``k8s-azure-lb_allow_<IPv4|IPv6>_<md5 of "<protocol>_<sources>_<ports>">`` (sources
and ports sorted as strings, joined by commas), and its destination addresses are the frontend IPs
of every Service that allows the same thing. Per Service and protocol (``Tcp``, ``Udp``, ``*`` for
SCTP), destination ports are the Service's ports (floating IP is on); sources are:

- each ``azure-allowed-service-tags`` tag, as one rule each;
- ``loadBalancerSourceRanges`` (aggregated), as one rule;
- else the ``Internet`` service tag, for a public Service (an internal one gets no rule).

A new rule takes the lowest free priority from 500; a rule whose last destination goes is
removed. Only rules named ``k8s-azure-lb...`` with a priority in 500..4096 are touched. Every
change is a read-modify-write of the whole group under its etag (``If-Match``), read again and
retried on HTTP 412; within the process the writes to one group go one at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from azure.mgmt.network import models as network

from ccm import errors
from ccm.cloudprovider import Service
from ccm_azure.annotations import ServiceOptions
from ccm_azure.api import AzureApi, PreconditionFailedError, is_not_found

#: (name, protocol, sources, destination ports, destination address) of an allow rule.
Wanted = tuple[str, str, tuple[str, ...], tuple[int, ...], str]

__all__ = ["RULE_PREFIX", "SecurityGroup", "allow_rule_name", "wanted_rules"]

RULE_PREFIX = "k8s-azure-lb"
MIN_PRIORITY = 500
MAX_PRIORITY = 4096
INTERNET = "Internet"
_ATTEMPTS = 4
_PROTOCOLS = {"TCP": "Tcp", "UDP": "Udp", "SCTP": "*"}


def allow_rule_name(
    protocol: str, family: str, sources: Iterable[str], ports: Iterable[int]
) -> str:
    """Upstream's name of the allow rule for ``protocol`` from ``sources`` to ``ports``."""
    key = "_".join([protocol, ",".join(sorted(sources)), ",".join(sorted(str(p) for p in ports))])
    digest = hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()
    return "_".join([RULE_PREFIX, "allow", family, digest])


def _family(address: str) -> str:
    return f"IPv{ipaddress.ip_address(address).version}"


def wanted_rules(
    service: Service, options: ServiceOptions, addresses: Sequence[str]
) -> list[Wanted]:
    """(name, protocol, sources, ports, destination) of every allow rule the Service needs."""
    ports: dict[str, list[int]] = {}
    for port in service.ports:
        name = str(port.get("protocol") or "TCP")
        if name not in _PROTOCOLS:
            raise errors.CloudProviderError(f"unsupported protocol {name}")
        ports.setdefault(_PROTOCOLS[name], []).append(int(port["port"]))
    ranges = [ipaddress.ip_network(r, strict=False) for r in options.source_ranges]
    allow_all = bool(ranges) and all(r.prefixlen == 0 for r in ranges)
    tags = list(options.allowed_service_tags)
    from_internet = not tags and (not ranges or allow_all) and (not options.internal or ranges)
    if from_internet and not allow_all:
        tags.append(INTERNET)
    by_family = {
        4: [str(n) for n in ipaddress.collapse_addresses(r for r in ranges if r.version == 4)],
        6: [str(n) for n in ipaddress.collapse_addresses(r for r in ranges if r.version == 6)],
    }
    out: list[Wanted] = []
    for protocol in ("Tcp", "Udp", "*"):
        if protocol not in ports:
            continue
        dst_ports = tuple(ports[protocol])
        for address in addresses:
            family = _family(address)
            sources: list[tuple[str, ...]] = [(tag,) for tag in tags]
            if by_family[ipaddress.ip_address(address).version]:
                sources.append(tuple(by_family[ipaddress.ip_address(address).version]))
            for source in sources:
                name = allow_rule_name(protocol, family, source, dst_ports)
                out.append((name, protocol, source, dst_ports, address))
    return out


def _managed(rule: Any) -> bool:
    priority = rule.priority or 0
    return str(rule.name).startswith(RULE_PREFIX) and MIN_PRIORITY <= priority <= MAX_PRIORITY


def _destinations(rule: Any) -> list[str]:
    out = [rule.destination_address_prefix] if rule.destination_address_prefix else []
    return out + list(rule.destination_address_prefixes or ())


def _set_destinations(rule: Any, prefixes: Iterable[str]) -> None:
    values = sorted(set(prefixes))
    if len(values) == 1:
        rule.destination_address_prefix, rule.destination_address_prefixes = values[0], None
    else:
        rule.destination_address_prefix, rule.destination_address_prefixes = None, values


def remove_destinations(group: Any, addresses: Iterable[str]) -> None:
    """Take ``addresses`` out of every managed rule; drop the rules left without any."""
    gone = set(addresses)
    kept = []
    for rule in group.security_rules or ():
        if _managed(rule):
            _set_destinations(rule, [d for d in _destinations(rule) if d not in gone])
            if not _destinations(rule):
                continue
        kept.append(rule)
    group.security_rules = kept


def add_rules(group: Any, wanted: Sequence[Wanted]) -> None:
    """Add each wanted rule (or its destination to the rule of that name)."""
    rules = list(group.security_rules or ())
    by_name = {str(r.name): r for r in rules}
    used = {r.priority for r in rules}
    for name, protocol, sources, ports, destination in wanted:
        rule = by_name.get(name)
        if rule is None:
            priority = next((p for p in range(MIN_PRIORITY, MAX_PRIORITY) if p not in used), None)
            if priority is None:
                raise errors.CloudProviderError("security rule priority exhausted")
            used.add(priority)
            rule = network.SecurityRule(
                name=name,
                priority=priority,
                protocol=protocol,
                access="Allow",
                direction="Inbound",
                source_port_range="*",
                source_address_prefix=sources[0] if len(sources) == 1 else None,
                source_address_prefixes=list(sources) if len(sources) > 1 else None,
                destination_port_ranges=sorted(str(p) for p in ports),
            )
            rules.append(rule)
            by_name[name] = rule
        _set_destinations(rule, [*_destinations(rule), destination])
    group.security_rules = rules


class SecurityGroup:
    """The cluster's network security group (``securityGroupName``)."""

    def __init__(self, api: AzureApi, group: str, name: str) -> None:
        self.api = api
        self.group = group
        self.name = name
        self._lock = asyncio.Lock()

    async def _read(self) -> Any | None:
        sgs = self.api.network.network_security_groups
        try:
            return await self.api.call("SecurityGroups.Get", lambda: sgs.get(self.group, self.name))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def modify(self, change: Callable[[Any], None], *, must_exist: bool) -> None:
        """Read the group, ``change`` it, write it under its etag if it changed, again on 412."""
        if not self.name:
            return
        async with self._lock:
            for attempt in range(_ATTEMPTS):
                group = await self._read()
                if group is None:
                    if must_exist:
                        raise errors.CloudProviderError(
                            f"network security group {self.name} not found in {self.group}"
                        )
                    return
                before = group.serialize()
                change(group)
                if group.serialize() == before:
                    return
                try:
                    await self._write(group)
                    return
                except PreconditionFailedError:
                    if attempt == _ATTEMPTS - 1:
                        raise

    async def _write(self, group: Any) -> None:
        sgs = self.api.network.network_security_groups
        await self.api.wait(
            "SecurityGroups.CreateOrUpdate",
            lambda: sgs.begin_create_or_update(
                self.group, self.name, group, headers={"If-Match": group.etag}
            ),
        )

    async def ensure(
        self, service: Service, options: ServiceOptions, addresses: Sequence[str]
    ) -> None:
        """The Service's rules to ``addresses`` exactly as wanted (its old ones replaced)."""
        wanted = wanted_rules(service, options, addresses)

        def change(group: Any) -> None:
            remove_destinations(group, addresses)
            add_rules(group, wanted)

        await self.modify(change, must_exist=True)

    async def remove(self, addresses: Sequence[str]) -> None:
        """Take ``addresses`` out of every rule (a missing group has none)."""
        if addresses:
            await self.modify(lambda g: remove_destinations(g, addresses), must_exist=False)
