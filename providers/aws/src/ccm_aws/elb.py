"""LoadBalancer: a classic ELB per ``type: LoadBalancer`` Service (ports the classic path of
``aws.go`` ``EnsureLoadBalancer``/``EnsureLoadBalancerDeleted`` and ``aws_loadbalancer.go``).

- Name: ``"a"`` + the Service UID without dashes, cut at 32 characters (upstream's default name).
  Tags: the cluster's ownership tag (``kubernetes.io/cluster/<id>=owned``) and
  ``kubernetes.io/service-name=<namespace>/<name>``.
- Subnets (upstream ``findELBSubnets``): the VPC's subnets tagged for the cluster or for no
  cluster; for an internet-facing ELB only public ones (their route table routes to an internet
  gateway); one per zone, preferring the role tag (``kubernetes.io/role/elb``, or
  ``kubernetes.io/role/internal-elb`` for an internal ELB), then the cluster tag, then the lowest
  ID. ``service.beta.kubernetes.io/aws-load-balancer-internal`` (any value but ``false``) makes
  the ELB internal.
- Listeners: one TCP listener per Service port (load balancer port → node port); UDP and SCTP are
  refused (a classic ELB has none). Listeners are synced on update.
- Health check: ``TCP:<node port of the first port>``, or ``HTTP:<healthCheckNodePort>/healthz``
  for ``externalTrafficPolicy: Local``; thresholds 2/6, timeout 5 s, interval 10 s (upstream's).
- Security group ``k8s-elb-<name>``, owned by the cluster, allowing the listener ports and ICMP
  fragmentation-needed from ``spec.loadBalancerSourceRanges`` (else the annotation
  ``service.beta.kubernetes.io/load-balancer-source-ranges``, else ``0.0.0.0/0``), synced on
  update; ``[Global] ElbSecurityGroup`` replaces it with a group the provider never changes.
- Instances: the Nodes' instances (from their providerIDs) are registered, others deregistered;
  their security groups admit the ELB's (:mod:`ccm_aws.nodegroups`) unless
  ``[Global] DisableSecurityGroupIngress``.
- Status: the ELB's DNS name as the ingress hostname.

``service.beta.kubernetes.io/aws-load-balancer-type: external`` or ``nlb-ip`` belongs to another
controller (ImplementedElsewhereError, as upstream). Not yet: ``nlb`` (refused with an error, never
silently a classic ELB) and the TLS/HTTP/proxy-protocol/access-log/... annotations. The pure
rules (annotations, listeners, health check, permissions, subnets) are in
:mod:`ccm_aws.elbrules`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccm.cloudprovider import (
    LoadBalancerIngress,
    LoadBalancerStatus,
    Node,
    Service,
    default_load_balancer_name,
)
from ccm.errors import CloudProviderError
from ccm_aws import addresses, elbrules, nodegroups
from ccm_aws.api import AWSApi, error_code
from ccm_aws.instances import AWSInstances
from ccm_aws.tags import RESOURCE_LIFECYCLE_OWNED, TAG_CLUSTER_PREFIX, ClusterTagging

__all__ = ["AWSLoadBalancers"]

_log = logging.getLogger("ccm_aws")


class AWSLoadBalancers:
    """The LoadBalancer capability of the AWS provider (classic ELB)."""

    def __init__(
        self,
        api: AWSApi,
        tagging: ClusterTagging,
        instances: AWSInstances,
        *,
        vpc: str = "",
        elb_security_group: str = "",
        disable_security_group_ingress: bool = False,
    ) -> None:
        self.api = api
        self.tagging = tagging
        self.instances = instances
        self.vpc = vpc
        self.elb_security_group = elb_security_group
        self.disable_security_group_ingress = disable_security_group_ingress

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        return default_load_balancer_name(service)

    async def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self.api.call("elb", "describe_load_balancers", LoadBalancerNames=[name])
        except CloudProviderError as exc:
            if error_code(exc.__cause__ or exc) == "LoadBalancerNotFound":
                return None
            raise
        descriptions = found.get("LoadBalancerDescriptions") or []
        return descriptions[0] if descriptions else None

    @staticmethod
    def _status(description: Mapping[str, Any]) -> LoadBalancerStatus:
        hostname = str(description.get("DNSName") or "")
        return LoadBalancerStatus(
            ingress=(LoadBalancerIngress(hostname=hostname),) if hostname else ()
        )

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        if elbrules.is_external(service):
            return None
        description = await self._describe(self.get_load_balancer_name(cluster_name, service))
        if description is None:
            return None
        return self._status(description)

    # -- pieces ----------------------------------------------------------------------------------

    @staticmethod
    def _instance_ids(nodes: Sequence[Node]) -> list[str]:
        ids: set[str] = set()
        for node in nodes:
            if not node.provider_id:
                _log.warning("node %s did not have ProviderID set", node.name)
                continue
            try:
                ids.add(addresses.instance_id_from_provider_id(node.provider_id))
            except ValueError:
                _log.warning(
                    "unable to parse ProviderID %s for node %s", node.provider_id, node.name
                )
        return sorted(ids)

    async def _vpc(self, instance_ids: Sequence[str]) -> str:
        """``[Global] VPC``, else the VPC of the Nodes' instances, else the one VPC whose subnets
        carry the cluster tag (a Service may come before any Node)."""
        if self.vpc:
            return self.vpc
        found = await self.instances.by_ids(instance_ids) if instance_ids else {}
        vpcs = sorted({str(i.get("VpcId")) for i in found.values() if i.get("VpcId")})
        if not vpcs and self.tagging.cluster_id:
            subnets = await self.api.paginate(
                "ec2",
                "describe_subnets",
                "Subnets",
                Filters=[{"Name": "tag-key", "Values": [self.tagging.cluster_tag_key]}],
            )
            vpcs = sorted({str(s["VpcId"]) for s in subnets})
            if len(vpcs) > 1:
                raise CloudProviderError(
                    f"subnets of several VPCs are tagged for the cluster ({', '.join(vpcs)}): "
                    "set [Global] VPC"
                )
        if not vpcs:
            raise CloudProviderError(
                "could not find the VPC of the load balancer: set [Global] VPC"
            )
        return vpcs[0]

    async def _subnets(self, vpc: str, internal: bool) -> list[str]:
        subnets = await self.api.paginate(
            "ec2", "describe_subnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc]}]
        )
        tables = await self.api.paginate(
            "ec2",
            "describe_route_tables",
            "RouteTables",
            Filters=[{"Name": "vpc-id", "Values": [vpc]}],
        )
        role = elbrules.TAG_ROLE_INTERNAL_ELB if internal else elbrules.TAG_ROLE_ELB
        best: dict[str, tuple[tuple[int, int, str], str]] = {}
        for subnet in subnets:
            tags = subnet.get("Tags") or ()
            ours = self.tagging.has_cluster_tag(tags)
            if not ours and any(k.startswith(TAG_CLUSTER_PREFIX) for k in elbrules.tag_map(tags)):
                continue  # another cluster's
            subnet_id, zone = str(subnet["SubnetId"]), str(subnet["AvailabilityZone"])
            if not internal and not elbrules.is_public(tables, subnet_id):
                continue
            rank = (0 if role in elbrules.tag_map(tags) else 1, 0 if ours else 1, subnet_id)
            if zone not in best or rank < best[zone][0]:
                best[zone] = (rank, subnet_id)
        if not best:
            raise CloudProviderError("could not find any suitable subnets for creating the ELB")
        return [best[zone][1] for zone in sorted(best)]

    async def _security_group(
        self, vpc: str, lb_name: str, service: Service, ports: Sequence[int]
    ) -> str:
        if self.elb_security_group:
            return self.elb_security_group
        group_name = f"k8s-elb-{lb_name}"
        found = await self.api.paginate(
            "ec2",
            "describe_security_groups",
            "SecurityGroups",
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "group-name", "Values": [group_name]},
            ],
        )
        if found:
            group = found[0]
            group_id = str(group["GroupId"])
        else:
            created = await self.api.call(
                "ec2",
                "create_security_group",
                GroupName=group_name,
                Description=f"Security group for Kubernetes ELB {lb_name} ({service.key})",
                VpcId=vpc,
            )
            group_id = str(created["GroupId"])
            tags = self.tagging.build_tags(RESOURCE_LIFECYCLE_OWNED)
            if tags:
                await self.api.call(
                    "ec2",
                    "create_tags",
                    Resources=[group_id],
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                )
            group = {}
        want = elbrules.wanted_permissions(ports, elbrules.source_ranges(service))
        have = elbrules.group_permissions(group)
        if want - have:
            await self.api.call(
                "ec2",
                "authorize_security_group_ingress",
                GroupId=group_id,
                IpPermissions=elbrules.ip_permissions(want - have),
            )
        if have - want:
            await self.api.call(
                "ec2",
                "revoke_security_group_ingress",
                GroupId=group_id,
                IpPermissions=elbrules.ip_permissions(have - want),
            )
        return group_id

    async def _sync_instances(
        self, name: str, current: Iterable[str], wanted: Sequence[str]
    ) -> None:
        have, want = set(current), set(wanted)
        if want - have:
            await self.api.call(
                "elb",
                "register_instances_with_load_balancer",
                LoadBalancerName=name,
                Instances=[{"InstanceId": i} for i in sorted(want - have)],
            )
        if have - want:
            await self.api.call(
                "elb",
                "deregister_instances_from_load_balancer",
                LoadBalancerName=name,
                Instances=[{"InstanceId": i} for i in sorted(have - want)],
            )

    async def _sync_node_ingress(
        self, group: str, current: Sequence[str], wanted: Sequence[str]
    ) -> None:
        """The backends' security groups admit the ELB's group ``group`` (and the former
        backends' stop admitting it). A shared ``ElbSecurityGroup`` is only ever added: other
        ELBs rely on the same rules."""
        if self.disable_security_group_ingress:
            return
        ids = sorted(set(current) | set(wanted))
        described = await self.instances.by_ids(ids) if ids else {}
        former = {
            g
            for i in set(current) - set(wanted)
            if i in described
            for g in (str(x["GroupId"]) for x in described[i].get("SecurityGroups") or ())
        }
        if group == self.elb_security_group:
            former = set()
            if not wanted:
                return
        await nodegroups.sync_node_ingress(
            self.api,
            self.tagging,
            group,
            [described[i] for i in wanted if i in described],
            candidates=former,
            keep_others=group == self.elb_security_group,
        )

    # -- LoadBalancer ----------------------------------------------------------------------------

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        elbrules.check_supported(service)
        name = self.get_load_balancer_name(cluster_name, service)
        wanted_listeners = elbrules.listeners(service)
        instance_ids = self._instance_ids(nodes)
        internal = elbrules.is_internal(service)
        vpc = await self._vpc(instance_ids)
        subnets = await self._subnets(vpc, internal)
        ports = [int(listener["LoadBalancerPort"]) for listener in wanted_listeners]
        group = await self._security_group(vpc, name, service, ports)
        description = await self._describe(name)
        if description is None:
            tags = {
                **self.tagging.build_tags(RESOURCE_LIFECYCLE_OWNED),
                elbrules.TAG_SERVICE_NAME: service.key,
            }
            args: dict[str, Any] = {
                "LoadBalancerName": name,
                "Listeners": wanted_listeners,
                "Subnets": subnets,
                "SecurityGroups": [group],
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }
            if internal:
                args["Scheme"] = "internal"
            _log.info("Creating load balancer for %s with name: %s", service.key, name)
            await self.api.call("elb", "create_load_balancer", **args)
            description = await self._describe(name)
            if description is None:
                raise CloudProviderError(f"load balancer {name} not found after creation")
        else:
            await self._sync_existing(name, description, wanted_listeners, subnets, group)
        target = elbrules.health_check_target(service, int(wanted_listeners[0]["InstancePort"]))
        current_check = description.get("HealthCheck") or {}
        expected = {"Target": target, **elbrules.HEALTH_CHECK}
        if any(current_check.get(k) != v for k, v in expected.items()):
            await self.api.call(
                "elb", "configure_health_check", LoadBalancerName=name, HealthCheck=expected
            )
        current = [str(i["InstanceId"]) for i in description.get("Instances") or ()]
        await self._sync_instances(name, current, instance_ids)
        await self._sync_node_ingress(group, current, instance_ids)
        return self._status(description)

    async def _sync_existing(
        self,
        name: str,
        description: Mapping[str, Any],
        wanted: Sequence[Mapping[str, Any]],
        subnets: Sequence[str],
        group: str,
    ) -> None:
        def key(listener: Mapping[str, Any]) -> tuple[str, int, str, int]:
            return (
                str(listener["Protocol"]).upper(),
                int(listener["LoadBalancerPort"]),
                str(listener["InstanceProtocol"]).upper(),
                int(listener["InstancePort"]),
            )

        have = {
            key(d["Listener"]): d["Listener"] for d in description.get("ListenerDescriptions") or ()
        }
        want = {key(listener): listener for listener in wanted}
        stale = [k for k in have if k not in want]
        # One port per call: moto 5.2 deletes nothing when given several (AWS takes a list).
        for port in sorted({k[1] for k in stale}):
            await self.api.call(
                "elb",
                "delete_load_balancer_listeners",
                LoadBalancerName=name,
                LoadBalancerPorts=[port],
            )
        missing = [want[k] for k in want if k not in have or k[1] in {s[1] for s in stale}]
        if missing:
            await self.api.call(
                "elb", "create_load_balancer_listeners", LoadBalancerName=name, Listeners=missing
            )
        current_subnets = set(description.get("Subnets") or ())
        if set(subnets) - current_subnets:
            await self.api.call(
                "elb",
                "attach_load_balancer_to_subnets",
                LoadBalancerName=name,
                Subnets=sorted(set(subnets) - current_subnets),
            )
        if current_subnets - set(subnets):
            await self.api.call(
                "elb",
                "detach_load_balancer_from_subnets",
                LoadBalancerName=name,
                Subnets=sorted(current_subnets - set(subnets)),
            )
        if list(description.get("SecurityGroups") or ()) != [group]:
            await self.api.call(
                "elb",
                "apply_security_groups_to_load_balancer",
                LoadBalancerName=name,
                SecurityGroups=[group],
            )

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        elbrules.check_supported(service)
        name = self.get_load_balancer_name(cluster_name, service)
        description = await self._describe(name)
        if description is None:
            raise CloudProviderError(f"load balancer not found: {name}")
        current = [str(i["InstanceId"]) for i in description.get("Instances") or ()]
        wanted = self._instance_ids(nodes)
        await self._sync_instances(name, current, wanted)
        for group in description.get("SecurityGroups") or ():
            await self._sync_node_ingress(str(group), current, wanted)

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        if elbrules.is_external(service):
            return  # the other controller's to delete
        name = self.get_load_balancer_name(cluster_name, service)
        description = await self._describe(name)
        if description is not None:
            _log.info("Deleting load balancer %s of %s", name, service.key)
            current = [str(i["InstanceId"]) for i in description.get("Instances") or ()]
            for group in description.get("SecurityGroups") or ():
                await self._sync_node_ingress(str(group), current, [])
            await self.api.call("elb", "delete_load_balancer", LoadBalancerName=name)
            groups = list(description.get("SecurityGroups") or ())
        else:
            groups = []
        if not self.elb_security_group:
            groups += [
                str(g["GroupId"])
                for g in await self.api.paginate(
                    "ec2",
                    "describe_security_groups",
                    "SecurityGroups",
                    Filters=[{"Name": "group-name", "Values": [f"k8s-elb-{name}"]}],
                )
            ]
        for group in sorted(set(groups) - {self.elb_security_group}):
            await self._delete_owned_group(group)

    async def _delete_owned_group(self, group: str) -> None:
        try:
            found = await self.api.paginate(
                "ec2", "describe_security_groups", "SecurityGroups", GroupIds=[group]
            )
        except CloudProviderError as exc:
            if error_code(exc.__cause__ or exc) == "InvalidGroup.NotFound":
                return
            raise
        if not found or not self.tagging.cluster_id:
            return
        tags = elbrules.tag_map(found[0].get("Tags") or ())
        if tags.get(self.tagging.cluster_tag_key) != RESOURCE_LIFECYCLE_OWNED:
            return  # not ours to delete
        await self.api.call("ec2", "delete_security_group", GroupId=group)
