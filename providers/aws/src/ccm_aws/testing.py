"""Test support: moto's server as a stand-in for AWS, and an operator's console over it.

``MotoServer`` runs ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a free port, request log
silenced); the provider reaches it through ``[ServiceOverride]`` endpoints written by
:func:`cloud_config`, over real HTTP, exactly as it would reach AWS. :class:`Ec2Console` is a plain
boto3 client of the same server for tests and the conformance driver: it builds VPCs and subnets
and launches, stops, starts and terminates instances, independently of the provider.

moto is a test dependency (``pip install ccm-aws[test]``), imported only when a server starts.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

__all__ = [
    "LINUX_AMI",
    "Ec2Console",
    "MotoServer",
    "aws_test_env",
    "cloud_config",
    "tagged_for",
]

#: An Ubuntu image of moto's catalogue (many of its stock AMIs are Windows images).
LINUX_AMI = "ami-1e749f67"
#: Services the provider may call, each given an endpoint override.
SERVICES = ("ec2", "elasticloadbalancing", "elasticloadbalancingv2", "sts")


def aws_test_env() -> dict[str, str]:
    """Fake credentials for moto, and no instance metadata service (never leave 127.0.0.1)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (``None``: unset) environment variables for the block, restoring them after."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoServer:
    """``with MotoServer() as moto: moto.url`` — moto in a thread of this process."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> MotoServer:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cloud_config(url: str, *, region: str = "us-east-1", **global_fields: str) -> str:
    """An INI ``--cloud-config`` pointing every service of ``region`` at ``url``."""
    lines = ["[Global]", f"Region = {region}"]
    lines += [f"{key} = {value}" for key, value in global_fields.items()]
    for n, service in enumerate(SERVICES, start=1):
        lines += [
            "",
            f'[ServiceOverride "{n}"]',
            f"Service = {service}",
            f"Region = {region}",
            f"URL = {url}",
            f"SigningRegion = {region}",
        ]
    return "\n".join(lines) + "\n"


class Ec2Console:
    """The operator's view of EC2 (blocking boto3), independent of the provider."""

    def __init__(
        self,
        url: str,
        region: str = "us-east-1",
        *,
        access_key: str = "testing",
        secret_key: str = "testing",
    ) -> None:
        self.region = region
        args: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": url,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "config": botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}),
        }
        self.ec2 = boto3.client("ec2", **args)
        self.elb = boto3.client("elb", **args)
        self.elbv2 = boto3.client("elbv2", **args)

    def zones(self) -> list[str]:
        zones = self.ec2.describe_availability_zones()["AvailabilityZones"]
        return sorted(str(z["ZoneName"]) for z in zones)

    def zone_id(self, zone: str) -> str:
        zones = self.ec2.describe_availability_zones(ZoneNames=[zone])["AvailabilityZones"]
        return str(zones[0]["ZoneId"])

    def create_network(
        self, cluster_id: str, *, cidr: str = "10.0.0.0/16", zones: int = 2
    ) -> dict[str, Any]:
        """A VPC with one subnet per zone (the first ``zones`` zones), tagged for the cluster.

        Returns ``{"vpc": id, "subnets": {zone: subnet id}}``.
        """
        tag = [{"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"}]
        vpc = self.ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        self.ec2.create_tags(Resources=[vpc], Tags=tag)
        base = cidr.split(".")
        subnets: dict[str, str] = {}
        for i, zone in enumerate(self.zones()[:zones]):
            subnet = self.ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"{base[0]}.{base[1]}.{i * 16}.0/20", AvailabilityZone=zone
            )["Subnet"]["SubnetId"]
            self.ec2.create_tags(Resources=[subnet], Tags=tag)
            subnets[zone] = subnet
        return {"vpc": vpc, "subnets": subnets}

    def make_public(self, vpc: str) -> str:
        """An internet gateway for ``vpc``, routed from its main route table (public subnets)."""
        igw = str(self.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"])
        self.ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        tables = self.ec2.describe_route_tables(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]},
            ]
        )["RouteTables"]
        self.ec2.create_route(
            RouteTableId=tables[0]["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
        )
        return igw

    def create_route_table(self, vpc: str, cluster_id: str = "") -> str:
        """A route table of ``vpc``, tagged for ``cluster_id`` when given."""
        table = str(self.ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"])
        if cluster_id:
            self.ec2.create_tags(
                Resources=[table],
                Tags=[{"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"}],
            )
        return table

    def routes(self, table: str) -> list[dict[str, Any]]:
        found = self.ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]
        return [r for r in found["Routes"] if r.get("InstanceId")]

    def run_instance(
        self,
        subnet: str,
        *,
        cluster_id: str = "",
        instance_type: str = "t3.medium",
        name: str = "",
        public_ip: bool = False,
        security_groups: list[str] | None = None,
    ) -> dict[str, Any]:
        """Launch one running instance; returns its DescribeInstances entry."""
        tags = [{"Key": "Name", "Value": name or f"ccm-test-{secrets.token_hex(3)}"}]
        if cluster_id:
            tags.append({"Key": f"kubernetes.io/cluster/{cluster_id}", "Value": "owned"})
        args: dict[str, Any] = {
            "ImageId": LINUX_AMI,
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": instance_type,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if public_ip:
            args["NetworkInterfaces"] = [
                {"DeviceIndex": 0, "SubnetId": subnet, "AssociatePublicIpAddress": True}
            ]
        else:
            args["SubnetId"] = subnet
            if security_groups:
                args["SecurityGroupIds"] = security_groups
        instance_id = self.ec2.run_instances(**args)["Instances"][0]["InstanceId"]
        return self.describe(instance_id)

    def describe(self, instance_id: str) -> dict[str, Any]:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance: dict[str, Any] = reservations[0]["Instances"][0]
        return instance

    def stop(self, instance_id: str) -> None:
        self.ec2.stop_instances(InstanceIds=[instance_id])

    def start(self, instance_id: str) -> None:
        self.ec2.start_instances(InstanceIds=[instance_id])

    def terminate(self, instance_id: str) -> None:
        self.ec2.terminate_instances(InstanceIds=[instance_id])


def tagged_for(console: Ec2Console, cluster_id: str) -> list[str]:
    """The load-balancer resources moto holds for the cluster: classic ELBs, NLBs and target
    groups carrying its tag, ``k8s-elb-`` security groups, and NLB rules in any group. A
    resource deleted while it is being read is left out."""
    key = f"kubernetes.io/cluster/{cluster_id}"
    found: list[str] = []

    def tags(call: Any, **params: Any) -> list[dict[str, Any]]:
        try:
            described: list[dict[str, Any]] = call(**params)["TagDescriptions"]
        except botocore.exceptions.ClientError:
            return []  # gone meanwhile
        return described

    for d in console.elb.describe_load_balancers()["LoadBalancerDescriptions"]:
        for t in tags(console.elb.describe_tags, LoadBalancerNames=[d["LoadBalancerName"]]):
            if any(x["Key"] == key for x in t["Tags"]):
                found.append(d["LoadBalancerName"])
    arns = [x["LoadBalancerArn"] for x in console.elbv2.describe_load_balancers()["LoadBalancers"]]
    arns += [g["TargetGroupArn"] for g in console.elbv2.describe_target_groups()["TargetGroups"]]
    for arn in arns:
        for t in tags(console.elbv2.describe_tags, ResourceArns=[arn]):
            if any(x["Key"] == key for x in t["Tags"]):
                found.append(arn)
    for group in console.ec2.describe_security_groups(
        Filters=[{"Name": "tag-key", "Values": [key]}]
    )["SecurityGroups"]:
        if str(group["GroupName"]).startswith("k8s-elb-"):
            found.append(group["GroupId"])
        for perm in group["IpPermissions"]:
            for rng in perm.get("IpRanges") or ():
                if str(rng.get("Description", "")).startswith("kubernetes.io/rule/nlb/"):
                    found.append(f"{group['GroupId']}:{rng['Description']}")
    return found
