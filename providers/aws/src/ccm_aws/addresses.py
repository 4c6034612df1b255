"""Provider IDs and Node addresses of EC2 instances, as cloud-provider-aws builds them.

Ports ``KubernetesInstanceID.MapToAWSInstanceID`` (``instances.go``) and ``getInstanceNodeAddress``
with ``extractIPv4NodeAddresses`` / ``extractIPv6NodeAddresses`` (``aws.go``). Pure functions over
the dicts boto3 returns for an instance.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ccm.cloudprovider import NodeAddress
from ccm.errors import CloudProviderError

__all__ = [
    "PROVIDER_NAME",
    "instance_id_from_provider_id",
    "node_addresses",
    "provider_id",
]

PROVIDER_NAME = "aws"

_INSTANCE_ID = re.compile(r"^i-[^/]*$")


def instance_id_from_provider_id(value: str) -> str:
    """The EC2 instance ID in a providerID: ``aws:///<zone>/<id>``, ``aws:////<id>`` or a bare
    ``i-...``. Raise ValueError when it names no instance (never treat that as "gone")."""
    if "://" in value and not value.startswith("aws://"):
        # Upstream would read the last path segment of another provider's ID as a bare ID.
        raise ValueError(f"Invalid scheme for AWS instance ({value})")
    s = value if value.startswith("aws://") else "aws:////" + value
    try:
        url = urlsplit(s)
    except ValueError as exc:
        raise ValueError(f"Invalid instance name ({value}): {exc}") from None
    if url.scheme != "aws":
        raise ValueError(f"Invalid scheme for AWS instance ({value})")
    tokens = url.path.strip("/").split("/")
    aws_id = tokens[-1] if tokens else ""
    if not aws_id or not _INSTANCE_ID.match(aws_id):
        raise ValueError(f"Invalid format for AWS instance ({value})")
    return aws_id


def provider_id(instance: Mapping[str, Any]) -> str:
    """``aws:///<availability zone>/<instance id>`` (upstream ``InstanceID`` with the prefix)."""
    zone = instance.get("Placement", {}).get("AvailabilityZone", "")
    return f"{PROVIDER_NAME}:///{zone}/{instance['InstanceId']}"


def _ip(value: str, what: str, instance_id: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise CloudProviderError(
            f"EC2 instance had invalid {what} address: {instance_id} ({value!r})"
        ) from None


def _device_index_key(interface: Mapping[str, Any]) -> tuple[int, int]:
    """Interfaces with an attachment sort by device index before those without one."""
    attachment = interface.get("Attachment")
    if attachment is None:
        return (1, 0)
    return (0, int(attachment.get("DeviceIndex", 0) or 0))


def _ipv4(
    instance: Mapping[str, Any], interfaces: Sequence[Mapping[str, Any]]
) -> list[NodeAddress]:
    instance_id = str(instance.get("InstanceId", ""))
    out: list[NodeAddress] = []
    for interface in interfaces:
        if interface.get("Status") != "in-use":
            continue
        for private in interface.get("PrivateIpAddresses") or ():
            address = private.get("PrivateIpAddress") or ""
            if address:
                out.append(
                    NodeAddress(type="InternalIP", address=_ip(address, "private", instance_id))
                )
    public_ip = instance.get("PublicIpAddress") or ""
    if public_ip:
        out.append(NodeAddress(type="ExternalIP", address=_ip(public_ip, "public", instance_id)))
    private_dns = instance.get("PrivateDnsName") or ""
    if private_dns:
        out.append(NodeAddress(type="InternalDNS", address=private_dns))
        out.append(NodeAddress(type="Hostname", address=private_dns))
    public_dns = instance.get("PublicDnsName") or ""
    if public_dns:
        out.append(NodeAddress(type="ExternalDNS", address=public_dns))
    return out


def _ipv6(
    instance: Mapping[str, Any], interfaces: Sequence[Mapping[str, Any]]
) -> list[NodeAddress]:
    instance_id = str(instance.get("InstanceId", ""))
    out: list[NodeAddress] = []
    for interface in interfaces:
        ipv6 = interface.get("Ipv6Addresses") or ()
        if interface.get("Status") != "in-use" or not ipv6:
            continue
        # Only the first IPv6 address of each interface, always internal (upstream).
        address = ipv6[0].get("Ipv6Address") or ""
        out.append(NodeAddress(type="InternalIP", address=_ip(address, "IPv6", instance_id)))
    return out


def node_addresses(
    instance: Mapping[str, Any], families: Iterable[str] = ("ipv4",)
) -> tuple[NodeAddress, ...]:
    """The Node addresses of an instance, for each family of ``[Global] NodeIPFamilies`` in order.

    IPv4: every private IP of every in-use interface (interfaces by device index, each one's
    addresses in EC2's order: the primary first) as InternalIP, the public IP as ExternalIP, the
    private DNS name as InternalDNS and Hostname, the public DNS name as ExternalDNS. IPv6: the
    first IPv6 address of each in-use interface, as InternalIP. Upstream sorts the interfaces in
    place while extracting IPv4 addresses, so an ``ipv6`` family listed after ``ipv4`` sees them
    by device index and one listed first sees them in EC2's order: reproduced here.
    """
    interfaces: list[Mapping[str, Any]] = list(instance.get("NetworkInterfaces") or ())
    out: list[NodeAddress] = []
    for family in families:
        if family == "ipv4":
            interfaces.sort(key=_device_index_key)
            out.extend(_ipv4(instance, interfaces))
        elif family == "ipv6":
            out.extend(_ipv6(instance, interfaces))
    return tuple(out)
