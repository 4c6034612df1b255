"""The conformance driver of the AWS provider: the suite's own handle on EC2.

``ccm conformance --cloud-provider aws --cloud-config cloud.conf --driver
ccm_aws.driver:driver_factory`` — the factory receives the provider the suite built and reaches
the same endpoints with the same credentials, through its own boto3 client (never through the
provider): it launches, stops, starts and terminates instances in a VPC and subnet of its own,
tagged for the provider's cluster. Against moto's server (the provider's tests) every call is
free; against a real account the machines are real and billed.

EC2 names machines, not the suite: a Node for an instance is named by the instance's private DNS
name, as a kubelet on EC2 names itself. :meth:`AWSDriver.create_machine` therefore returns that
name in :attr:`Machine.name`, and the requested name becomes the instance's ``Name`` tag.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

import boto3
import botocore.exceptions

from ccm.cloudprovider import CloudProvider, NodeAddress, run_blocking
from ccm.testing.conformance.driver import (
    CloudLoadBalancer,
    CloudRoute,
    ConformanceDriverBase,
    Machine,
)
from ccm_aws import addresses
from ccm_aws.instances import LABEL_ZONE_ID
from ccm_aws.provider import AWSProvider

__all__ = ["LINUX_AMI", "AWSDriver", "driver_factory"]

#: An Ubuntu image of moto's catalogue; set ``AWSDriver.image_id`` for a real account.
LINUX_AMI = "ami-1e749f67"


class AWSDriver(ConformanceDriverBase):
    """Launches the suite's machines as EC2 instances of the provider's cluster."""

    max_load_balancer_name_length = 32
    #: EC2 routes carry no tags: the cluster's route table is the scope, ``cluster_name`` only
    #: names routes (as upstream), so the suite does not check scoping by cluster name.
    route_scope = "route-table"
    image_id = LINUX_AMI
    instance_type = "t3.small"

    def __init__(self, provider: AWSProvider) -> None:
        super().__init__()
        self.region = provider.region
        self.tagging = provider.tagging
        session = boto3.Session(region_name=provider.region)
        self.ec2: Any = session.client("ec2", **provider.api.client_args("ec2"))
        self.elb: Any = session.client("elb", **provider.api.client_args("elb"))
        self._ids: dict[str, str] = {}
        self._network: tuple[str, str] | None = None
        self._route_table = ""
        self._lock = asyncio.Lock()

    def _tags(self, name: str) -> list[dict[str, str]]:
        tags = {"Name": name, **self.tagging.build_tags("owned")}
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _create_network(self) -> tuple[str, str]:
        cidr = f"10.{secrets.randbelow(200) + 20}.0.0/16"
        vpc = self.ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        zone = self.ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
        subnet = self.ec2.create_subnet(
            VpcId=vpc, CidrBlock=cidr.replace("/16", "/20"), AvailabilityZone=zone
        )["Subnet"]["SubnetId"]
        # An internet gateway on the main route table: the subnet is public (internet-facing ELBs).
        igw = self.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        self.ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        main = self.ec2.describe_route_tables(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]},
            ]
        )["RouteTables"][0]["RouteTableId"]
        self.ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        # The cluster's route table (the provider's Routes find it by its cluster tag).
        table = self.ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        self.ec2.create_tags(Resources=[vpc, subnet, table], Tags=self._tags("ccm-conformance"))
        self._route_table = str(table)
        return vpc, subnet

    async def _subnet(self) -> str:
        async with self._lock:
            if self._network is None:
                self._network = await run_blocking(self._create_network)
            return self._network[1]

    def _describe(self, instance_id: str) -> dict[str, Any]:
        found = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance: dict[str, Any] = found[0]["Instances"][0]
        return instance

    def _launch(self, name: str, subnet: str) -> tuple[dict[str, Any], str]:
        launched = self.ec2.run_instances(
            ImageId=self.image_id,
            InstanceType=self.instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": self._tags(name)}],
        )
        instance_id = launched["Instances"][0]["InstanceId"]
        waiter = self.ec2.get_waiter("instance_running")
        waiter.wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        instance = self._describe(instance_id)
        zone = instance["Placement"]["AvailabilityZone"]
        zones = self.ec2.describe_availability_zones(ZoneNames=[zone])["AvailabilityZones"]
        return instance, str(zones[0]["ZoneId"])

    @staticmethod
    def _addresses(instance: dict[str, Any]) -> tuple[NodeAddress, ...]:
        return addresses.node_addresses(instance)

    async def create_machine(self, name: str) -> Machine:
        instance, zone_id = await run_blocking(self._launch, name, await self._subnet())
        node_name = str(instance["PrivateDnsName"])
        machine = Machine(
            name=node_name,
            provider_id=addresses.provider_id(instance),
            addresses=self._addresses(instance),
            instance_type=str(instance["InstanceType"]),
            zone=str(instance["Placement"]["AvailabilityZone"]),
            region=self.region,
            labels={LABEL_ZONE_ID: zone_id},
        )
        self._ids[node_name] = str(instance["InstanceId"])
        self.machines[node_name] = machine
        return machine

    def _id(self, name: str) -> str:
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"driver: no machine {name!r} was created by this driver") from None

    async def stop_machine(self, name: str) -> None:
        await run_blocking(self.ec2.stop_instances, InstanceIds=[self._id(name)])

    async def start_machine(self, name: str) -> None:
        await run_blocking(self.ec2.start_instances, InstanceIds=[self._id(name)])

    async def delete_machine(self, name: str) -> None:
        instance_id = self._ids.get(name)
        if instance_id is None:
            return
        try:
            await run_blocking(self.ec2.terminate_instances, InstanceIds=[instance_id])
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                raise

    def _add_address(self, instance_id: str) -> tuple[NodeAddress, ...]:
        eni = self._describe(instance_id)["NetworkInterfaces"][0]["NetworkInterfaceId"]
        self.ec2.assign_private_ip_addresses(
            NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1
        )
        return self._addresses(self._describe(instance_id))

    async def change_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        """Give the machine one more private IP (a secondary IP of its primary interface)."""
        return await run_blocking(self._add_address, self._id(name))

    def _load_balancers(self) -> list[CloudLoadBalancer]:
        names = {v: k for k, v in self._ids.items()}
        out = []
        for page in self.elb.get_paginator("describe_load_balancers").paginate():
            descriptions = page["LoadBalancerDescriptions"]
            tags: dict[str, dict[str, str]] = {}
            for start in range(0, len(descriptions), 20):
                chunk = [d["LoadBalancerName"] for d in descriptions[start : start + 20]]
                for entry in self.elb.describe_tags(LoadBalancerNames=chunk)["TagDescriptions"]:
                    tags[entry["LoadBalancerName"]] = {t["Key"]: t["Value"] for t in entry["Tags"]}
            for d in descriptions:
                name = d["LoadBalancerName"]
                out.append(
                    CloudLoadBalancer(
                        name=name,
                        service=tags.get(name, {}).get("kubernetes.io/service-name", ""),
                        hostnames=(d["DNSName"],),
                        nodes=tuple(
                            sorted(
                                names.get(i["InstanceId"], i["InstanceId"]) for i in d["Instances"]
                            )
                        ),
                    )
                )
        return out

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        """Every classic ELB of the account and region, read directly from the API."""
        return await run_blocking(self._load_balancers)

    def _routes(self, cluster_name: str) -> list[CloudRoute]:
        if not self._route_table:
            return []
        names = {v: k for k, v in self._ids.items()}
        tables = self.ec2.describe_route_tables(RouteTableIds=[self._route_table])["RouteTables"]
        out = []
        for entry in tables[0].get("Routes") or ():
            instance_id = entry.get("InstanceId")
            destination = entry.get("DestinationCidrBlock") or entry.get("DestinationIpv6CidrBlock")
            if not instance_id or not destination:
                continue  # the local and gateway routes are not the provider's
            out.append(
                CloudRoute(
                    cluster_name=cluster_name,
                    target_node=names.get(instance_id, instance_id),
                    destination_cidr=str(destination),
                )
            )
        return out

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        """The instance routes of the cluster's route table, read directly from the API. EC2
        routes carry no tags: the route table is the cluster's scope, so every instance route in
        it counts as the cluster's."""
        return await run_blocking(self._routes, cluster_name)

    def _delete_network(self) -> None:
        if self._network is None:
            return
        vpc, subnet = self._network
        for call, args in (
            (self.ec2.delete_route_table, {"RouteTableId": self._route_table}),
            (self.ec2.delete_subnet, {"SubnetId": subnet}),
            (self.ec2.delete_vpc, {"VpcId": vpc}),
        ):
            try:
                call(**args)
            except botocore.exceptions.ClientError:
                return  # still in use (instances shutting down): left for the account's owner
        self._network = None

    async def cleanup(self) -> None:
        for name in list(self.machines):
            await self.delete_machine(name)
            self.machines.pop(name, None)
        await run_blocking(self._delete_network)
        await run_blocking(self.ec2.close)
        await run_blocking(self.elb.close)


async def driver_factory(provider: CloudProvider) -> AWSDriver:
    """``--driver ccm_aws.driver:driver_factory`` (boto3 builds its clients on the framework's
    thread pool, off the event loop)."""
    if not isinstance(provider, AWSProvider):
        raise TypeError(f"the AWS driver needs the AWS provider, not {type(provider).__name__}")
    return await run_blocking(AWSDriver, provider)
