"""Provider IDs and Node addresses, with upstream's cases (``TestMapToAWSInstanceIDs``,
``TestNodeAddresses*``, ``TestNodeAddressesOrderedByDeviceIndex``)."""

from __future__ import annotations

from typing import Any

import pytest
from ccm_aws.addresses import instance_id_from_provider_id, node_addresses, provider_id

from ccm.cloudprovider import NodeAddress
from ccm.errors import CloudProviderError


@pytest.mark.parametrize(
    ("kubernetes_id", "aws_id"),
    [
        ("aws:///us-east-1a/i-12345678", "i-12345678"),
        ("aws:////i-12345678", "i-12345678"),
        ("i-12345678", "i-12345678"),
        ("aws:///us-east-1a/i-12345678abcdef01", "i-12345678abcdef01"),
        ("aws:///us-west-2-lax-1a/i-0123456789abcdef0", "i-0123456789abcdef0"),
    ],
)
def test_maps_provider_ids_to_instance_ids(kubernetes_id: str, aws_id: str) -> None:
    assert instance_id_from_provider_id(kubernetes_id) == aws_id


@pytest.mark.parametrize(
    "kubernetes_id",
    [
        "aws:///us-east-1a",
        "aws://i-12345678",  # the ID is the host: upstream rejects it too
        "",
        "gce:///us-east-1a/i-12345678",
        "aws:///us-east-1a/vol-12345678",
        "aws:///us-east-1a/",
        "instance",
    ],
)
def test_malformed_provider_ids_name_no_instance(kubernetes_id: str) -> None:
    with pytest.raises(ValueError, match="AWS instance"):
        instance_id_from_provider_id(kubernetes_id)


def test_provider_id_names_zone_and_instance() -> None:
    instance = {"InstanceId": "i-0abc", "Placement": {"AvailabilityZone": "eu-west-1b"}}
    assert provider_id(instance) == "aws:///eu-west-1b/i-0abc"


def _eni(index: int | None, ips: list[str], *, status: str = "in-use", ipv6: list[str] = ()) -> Any:  # type: ignore[assignment]
    eni: dict[str, Any] = {
        "Status": status,
        "PrivateIpAddresses": [
            {"PrivateIpAddress": ip, "Primary": n == 0} for n, ip in enumerate(ips)
        ],
        "Ipv6Addresses": [{"Ipv6Address": a} for a in ipv6],
    }
    if index is not None:
        eni["Attachment"] = {"DeviceIndex": index}
    return eni


def _instance(*enis: Any, public_ip: str = "", private_dns: str = "", public_dns: str = "") -> Any:
    return {
        "InstanceId": "i-00000000000000000",
        "NetworkInterfaces": list(enis),
        "PublicIpAddress": public_ip,
        "PrivateDnsName": private_dns,
        "PublicDnsName": public_dns,
    }


def _pairs(addresses: tuple[NodeAddress, ...]) -> list[tuple[str, str]]:
    return [(a.type, a.address) for a in addresses]


def test_addresses_are_ordered_by_device_index() -> None:
    """Upstream TestNodeAddressesOrderedByDeviceIndex: interfaces by device index (the one without
    an attachment last), each interface's IPs in EC2's order, then public IP and DNS names."""
    instance = _instance(
        _eni(1, ["172.20.1.1", "172.20.1.2"]),
        _eni(None, ["172.20.9.9"]),
        _eni(0, ["172.20.0.100", "172.20.0.101"]),
        public_ip="1.2.3.4",
        private_dns="ip-172-20-0-100.ec2.internal",
    )
    assert _pairs(node_addresses(instance)) == [
        ("InternalIP", "172.20.0.100"),
        ("InternalIP", "172.20.0.101"),
        ("InternalIP", "172.20.1.1"),
        ("InternalIP", "172.20.1.2"),
        ("InternalIP", "172.20.9.9"),
        ("ExternalIP", "1.2.3.4"),
        ("InternalDNS", "ip-172-20-0-100.ec2.internal"),
        ("Hostname", "ip-172-20-0-100.ec2.internal"),
    ]


@pytest.mark.parametrize(
    ("instance", "count"),
    [
        pytest.param(
            _instance(
                _eni(0, ["192.168.0.1"]),
                public_ip="1.2.3.4",
                private_dns="instance-same.ec2.internal",
                public_dns="instance-same.ec2.external",
            ),
            5,
            id="ipv4 w/public IP",
        ),
        pytest.param(
            _instance(private_dns="instance-same.ec2.internal"), 2, id="ipv4 w/private IP only"
        ),
        pytest.param(
            _instance(public_ip="1.2.3.4", private_dns="instance-other.ec2.internal"),
            3,
            id="ipv4 w/public IP and no public DNS",
        ),
        pytest.param(
            _instance(
                _eni(0, ["192.168.0.4"]),
                public_ip="1.2.3.4",
                private_dns="i-00000000000000004.ec2.internal",
            ),
            4,
            id="resource based naming using FQDN",
        ),
    ],
)
def test_upstream_address_counts(instance: Any, count: int) -> None:
    assert len(node_addresses(instance)) == count


def test_interfaces_not_in_use_give_no_address() -> None:
    instance = _instance(_eni(0, ["10.0.0.1"]), _eni(1, ["10.0.0.2"], status="detaching"))
    assert _pairs(node_addresses(instance)) == [("InternalIP", "10.0.0.1")]


def test_ipv6_only_gives_the_first_ipv6_address_of_each_interface() -> None:
    """Upstream "ipv6 only": one address, internal, even when several are assigned."""
    instance = _instance(
        _eni(
            0,
            ["192.168.0.3"],
            ipv6=["2a05:d014:aa7:911:fc7e:1600:fc4d:ab2", "2a05:d014:aa7:911:9f44:e737:1aa0:6489"],
        ),
        private_dns="instance-ipv6.ec2.internal",
        public_dns="instance-same.ec2.external",
    )
    assert _pairs(node_addresses(instance, ["ipv6"])) == [
        ("InternalIP", "2a05:d014:aa7:911:fc7e:1600:fc4d:ab2")
    ]


def test_families_are_listed_in_the_configured_order() -> None:
    instance = _instance(
        _eni(1, ["10.0.1.1"], ipv6=["2001:db8::11"]),
        _eni(0, ["10.0.0.1"], ipv6=["2001:db8::1"]),
        private_dns="ip-10-0-0-1.ec2.internal",
    )
    # ipv6 first sees the interfaces in EC2's order; after ipv4 it sees them by device index.
    assert _pairs(node_addresses(instance, ["ipv6", "ipv4"])) == [
        ("InternalIP", "2001:db8::11"),
        ("InternalIP", "2001:db8::1"),
        ("InternalIP", "10.0.0.1"),
        ("InternalIP", "10.0.1.1"),
        ("InternalDNS", "ip-10-0-0-1.ec2.internal"),
        ("Hostname", "ip-10-0-0-1.ec2.internal"),
    ]
    assert _pairs(node_addresses(instance, ["ipv4", "ipv6"]))[-2:] == [
        ("InternalIP", "2001:db8::1"),
        ("InternalIP", "2001:db8::11"),
    ]


def test_an_invalid_address_is_an_error() -> None:
    with pytest.raises(CloudProviderError, match="invalid private address"):
        node_addresses(_instance(_eni(0, ["10.0.0.300"])))
