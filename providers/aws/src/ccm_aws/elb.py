"""Classic ELBs, the default load balancer of a ``type: LoadBalancer`` Service (upstream
``aws.go`` ``EnsureLoadBalancer``/``EnsureLoadBalancerDeleted``, classic path, and
``aws_loadbalancer.go``).

- Name: ``"a"`` + the Service UID without dashes, cut at 32 characters (upstream's default name).
  Tags: ``additional-resource-tags``, the cluster's ownership tag
  (``kubernetes.io/cluster/<id>=owned``) and ``kubernetes.io/service-name=<namespace>/<name>``.
- VPC and subnets: :mod:`ccm_aws.lbnetwork`; ``internal`` makes the ELB internal.
- Listeners (:func:`ccm_aws.annotations.classic_listeners`): one per Service port (load balancer
  port → node port), TCP, or SSL/HTTPS with ``ssl-cert`` on the ``ssl-ports``, HTTP with
  ``backend-protocol: http``; synced on update.
- Health check (:func:`ccm_aws.annotations.classic_health_check`): ``TCP:<first node port>`` (SSL
  with an https/ssl backend), or ``HTTP:<healthCheckNodePort>/healthz`` for
  ``externalTrafficPolicy: Local``; the healthcheck-* annotations override it; thresholds 2/6,
  timeout 5 s, interval 10 s by default.
- Attributes: cross-zone load balancing (default off) and the connection idle timeout (default
  60 s), from their annotations.
- Security groups: ``security-groups`` (used as they are), else ``[Global] ElbSecurityGroup``
  (never changed), else ``k8s-elb-<name>``, owned by the cluster, allowing the listener ports and
  ICMP fragmentation-needed from ``loadBalancerSourceRanges`` (else the
  ``load-balancer-source-ranges`` annotation, else ``0.0.0.0/0``); ``extra-security-groups`` are
  added after it.
- Instances: the (``target-node-labels``-filtered) Nodes' instances are registered, others
  deregistered; their security groups admit the ELB's first group (:mod:`ccm_aws.nodegroups`)
  unless ``[Global] DisableSecurityGroupIngress``.
- Status: the ELB's DNS name as the ingress hostname.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccm.cloudprovider import LoadBalancerIngress, LoadBalancerStatus, Node, Service
from ccm.errors import CloudProviderError
from ccm_aws import annotations as ann
from ccm_aws import elbrules, nodegroups
from ccm_aws.api import AWSApi, aws_code
from ccm_aws.instances import AWSInstances
from ccm_aws.lbnetwork import LBNetwork, instance_ids
from ccm_aws.tags import RESOURCE_LIFECYCLE_OWNED, ClusterTagging

__all__ = ["ClassicLoadBalancers"]

_log = logging.getLogger("ccm_aws")


class ClassicLoadBalancers:
    """The classic-ELB half of the provider's LoadBalancer capability."""

    def __init__(
        self,
        api: AWSApi,
        tagging: ClusterTagging,
        instances: AWSInstances,
        network: LBNetwork,
        *,
        elb_security_group: str = "",
        disable_security_group_ingress: bool = False,
    ) -> None:
        self.api = api
        self.tagging = tagging
        self.instances = instances
        self.network = network
        self.elb_security_group = elb_security_group
        self.disable_security_group_ingress = disable_security_group_ingress

    async def describe(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self.api.call("elb", "describe_load_balancers", LoadBalancerNames=[name])
        except CloudProviderError as exc:
            if aws_code(exc) == "LoadBalancerNotFound":
                return None
            raise
        descriptions = found.get("LoadBalancerDescriptions") or []
        return descriptions[0] if descriptions else None

    @staticmethod
    def status(description: Mapping[str, Any]) -> LoadBalancerStatus:
        hostname = str(description.get("DNSName") or "")
        return LoadBalancerStatus(
            ingress=(LoadBalancerIngress(hostname=hostname),) if hostname else ()
        )

    # -- pieces ----------------------------------------------------------------------------------

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
            tags = self.tagging.build_tags(
                RESOURCE_LIFECYCLE_OWNED, ann.key_values(service.annotations, ann.ADDITIONAL_TAGS)
            )
            # Tagged in the same call: a group created untagged (the tagging call failing after
            # it) would never count as the cluster's, and never be deleted.
            spec = [
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ]
            created = await self.api.call(
                "ec2",
                "create_security_group",
                GroupName=group_name,
                Description=f"Security group for Kubernetes ELB {lb_name} ({service.key})",
                VpcId=vpc,
                **({"TagSpecifications": spec} if tags else {}),
            )
            group_id = str(created["GroupId"])
            group = {}
        want = elbrules.wanted_permissions(ports, ann.source_ranges(service))
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

    def _shared(self, group: str, service: Service) -> bool:
        """Whether ``group`` is not the ELB's own: ``[Global] ElbSecurityGroup`` or a group of
        the ``security-groups``/``extra-security-groups`` annotations, which other load
        balancers may use too."""
        return group == self.elb_security_group or group in ann.string_list(
            service.annotations, ann.SECURITY_GROUPS
        ) + ann.string_list(service.annotations, ann.EXTRA_SECURITY_GROUPS)

    async def _sync_node_ingress(
        self, group: str, current: Sequence[str], wanted: Sequence[str], *, shared: bool
    ) -> None:
        """The backends' security groups admit the ELB's group ``group`` (and the former
        backends' stop admitting it). A ``shared`` group's rules are only ever added: other
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
        if shared:
            former = set()
            if not wanted:
                return
        await nodegroups.sync_node_ingress(
            self.api,
            self.tagging,
            group,
            [described[i] for i in wanted if i in described],
            candidates=former,
            keep_others=shared,
        )

    # -- LoadBalancer ----------------------------------------------------------------------------

    async def _groups(
        self, vpc: str, name: str, service: Service, ports: Sequence[int]
    ) -> list[str]:
        """Upstream ``buildELBSecurityGroupList``: the ELB's groups, its own first."""
        groups = ann.string_list(service.annotations, ann.SECURITY_GROUPS)
        if not groups:
            groups = [await self._security_group(vpc, name, service, ports)]
        return groups + ann.string_list(service.annotations, ann.EXTRA_SECURITY_GROUPS)

    async def ensure(
        self, name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        wanted_listeners = ann.classic_listeners(service)
        if not wanted_listeners:
            raise CloudProviderError(
                f"requested load balancer with no node ports (service {service.key})"
            )
        attributes = ann.classic_attributes(service)
        ids = instance_ids(ann.filter_target_nodes(nodes, service.annotations))
        internal = ann.is_internal(service)
        vpc = await self.network.vpc(instance_ids(nodes))
        subnets = await self.network.subnets(vpc, service, internal)
        ports = [int(str(listener["LoadBalancerPort"])) for listener in wanted_listeners]
        groups = await self._groups(vpc, name, service, ports)
        description = await self.describe(name)
        if description is None:
            tags = self.tagging.build_tags(
                RESOURCE_LIFECYCLE_OWNED,
                {
                    **ann.key_values(service.annotations, ann.ADDITIONAL_TAGS),
                    elbrules.TAG_SERVICE_NAME: service.key,
                },
            )
            args: dict[str, Any] = {
                "LoadBalancerName": name,
                "Listeners": wanted_listeners,
                "Subnets": subnets,
                "SecurityGroups": groups,
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }
            if internal:
                args["Scheme"] = "internal"
            _log.info("Creating load balancer for %s with name: %s", service.key, name)
            await self.api.call("elb", "create_load_balancer", **args)
            description = await self.describe(name)
            if description is None:
                raise CloudProviderError(f"load balancer {name} not found after creation")
        else:
            await self._sync_existing(name, description, wanted_listeners, subnets, groups)
        await self._sync_attributes(name, attributes)
        first_node_port = int(str(wanted_listeners[0]["InstancePort"]))
        expected = ann.classic_health_check(service, first_node_port).to_api()
        current_check = description.get("HealthCheck") or {}
        if any(current_check.get(k) != v for k, v in expected.items()):
            await self.api.call(
                "elb", "configure_health_check", LoadBalancerName=name, HealthCheck=expected
            )
        current = [str(i["InstanceId"]) for i in description.get("Instances") or ()]
        await self._sync_node_ingress(
            groups[0], current, ids, shared=self._shared(groups[0], service)
        )
        await self._sync_instances(name, current, ids)
        return self.status(description)

    async def _sync_attributes(self, name: str, wanted: Mapping[str, Any]) -> None:
        found = await self.api.call(
            "elb", "describe_load_balancer_attributes", LoadBalancerName=name
        )
        have = found.get("LoadBalancerAttributes") or {}
        if any(
            any((have.get(k) or {}).get(f) != v for f, v in value.items())
            for k, value in wanted.items()
        ):
            await self.api.call(
                "elb",
                "modify_load_balancer_attributes",
                LoadBalancerName=name,
                LoadBalancerAttributes=dict(wanted),
            )

    async def _sync_existing(
        self,
        name: str,
        description: Mapping[str, Any],
        wanted: Sequence[Mapping[str, Any]],
        subnets: Sequence[str],
        groups: Sequence[str],
    ) -> None:
        def key(listener: Mapping[str, Any]) -> tuple[str, int, str, int, str]:
            return (
                str(listener["Protocol"]).upper(),
                int(listener["LoadBalancerPort"]),
                str(listener["InstanceProtocol"]).upper(),
                int(listener["InstancePort"]),
                str(listener.get("SSLCertificateId") or ""),
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
        if list(description.get("SecurityGroups") or ()) != list(groups):
            await self.api.call(
                "elb",
                "apply_security_groups_to_load_balancer",
                LoadBalancerName=name,
                SecurityGroups=list(groups),
            )

    async def update(self, name: str, service: Service, nodes: Sequence[Node]) -> None:
        description = await self.describe(name)
        if description is None:
            raise CloudProviderError(f"load balancer not found: {name}")
        current = [str(i["InstanceId"]) for i in description.get("Instances") or ()]
        wanted = instance_ids(ann.filter_target_nodes(nodes, service.annotations))
        await self._sync_instances(name, current, wanted)
        for group in (description.get("SecurityGroups") or ())[:1]:
            await self._sync_node_ingress(
                str(group), current, wanted, shared=self._shared(str(group), service)
            )

    async def delete(self, name: str, service: Service) -> None:
        description = await self.describe(name)
        if description is not None:
            _log.info("Deleting load balancer %s of %s", name, service.key)
            current = [str(i["InstanceId"]) for i in description.get("Instances") or ()]
            for group in description.get("SecurityGroups") or ():
                await self._sync_node_ingress(
                    str(group), current, [], shared=self._shared(str(group), service)
                )
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

    async def leftover_group(self, name: str) -> str | None:
        """The ELB ``name``'s own security group, if a delete cut short left it (on AWS it often
        outlives its ELB for a while: DependencyViolation)."""
        if self.elb_security_group or not self.tagging.cluster_id:
            return None
        found = await self.api.paginate(
            "ec2",
            "describe_security_groups",
            "SecurityGroups",
            Filters=[
                {"Name": "group-name", "Values": [f"k8s-elb-{name}"]},
                {
                    "Name": f"tag:{self.tagging.cluster_tag_key}",
                    "Values": [RESOURCE_LIFECYCLE_OWNED],
                },
            ],
        )
        return str(found[0]["GroupId"]) if found else None

    async def _delete_owned_group(self, group: str) -> None:
        try:
            found = await self.api.paginate(
                "ec2", "describe_security_groups", "SecurityGroups", GroupIds=[group]
            )
        except CloudProviderError as exc:
            if aws_code(exc) == "InvalidGroup.NotFound":
                return
            raise
        if not found or not self.tagging.cluster_id:
            return
        tags = elbrules.tag_map(found[0].get("Tags") or ())
        if tags.get(self.tagging.cluster_tag_key) != RESOURCE_LIFECYCLE_OWNED:
            return  # not ours to delete
        await self.api.call("ec2", "delete_security_group", GroupId=group)
