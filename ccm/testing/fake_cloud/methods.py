"""The fake cloud's method names, constants and address helpers."""

from __future__ import annotations

import functools
import hashlib
import ipaddress

#: Annotation on a Service that makes ensure_load_balancer fail with its value as the message.
REJECT_ANNOTATION = "fake.ccm.io/reject"
DEFAULT_IP_POOL = "192.0.2.0/24"  # RFC 5737 documentation range

#: Every cloud API method name (matched by ``"*"``).
CLOUD_METHODS: frozenset[str] = frozenset(
    {
        "instance-exists",
        "instance-shutdown",
        "instance-metadata",
        "instance-exists-batch",
        "instance-shutdown-batch",
        "instance-metadata-batch",
        "node-addresses",
        "node-addresses-by-provider-id",
        "instance-id",
        "instance-type",
        "instance-type-by-provider-id",
        "instance-exists-by-provider-id",
        "instance-shutdown-by-provider-id",
        "add-ssh-key-to-all-instances",
        "current-node-name",
        "get-zone",
        "get-zone-by-provider-id",
        "get-zone-by-node-name",
        "get",
        "create",
        "update",
        "delete",
        "list-routes",
        "create-route",
        "delete-route",
        "list-clusters",
        "master",
    }
)
_LIFECYCLE_METHODS: frozenset[str] = frozenset({"initialize", "aclose"})
#: Every recorded method name.
ALL_METHODS: frozenset[str] = CLOUD_METHODS | _LIFECYCLE_METHODS
_WILDCARD = "*"


def _check_method(method: str) -> str:
    if method != _WILDCARD and method not in ALL_METHODS:
        raise ValueError(
            f"unknown fake cloud method {method!r} (known: {', '.join(sorted(ALL_METHODS))})"
        )
    return method


@functools.lru_cache(maxsize=64)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=True)


def _check_cidr(value: str) -> str:
    try:
        return str(_network(value.strip()))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc})") from None


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=64)
def _span(cidr: str) -> tuple[int, int, int]:
    """``cidr`` as (first address as an integer, number of addresses, IP version)."""
    net = _network(cidr)
    return int(net.network_address), net.num_addresses, net.version


def _address_in(cidr: str, seed: str) -> str:
    """A host address of ``cidr`` chosen by a hash of ``seed`` (deterministic)."""
    first, size, version = _span(cidr)
    digest = _digest(seed)
    value = first + (1 + digest % (size - 2) if size > 2 else digest % size)
    if version == 4:  # the ipaddress text, without building the objects (once per Node call)
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))
