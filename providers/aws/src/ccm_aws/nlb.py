"""Network Load Balancers (elbv2, instance targets) for Services annotated
``service.beta.kubernetes.io/aws-load-balancer-type: nlb``, as upstream's
``ensureLoadBalancerv2`` and the NLB paths of ``EnsureLoadBalancer``/``EnsureLoadBalancerDeleted``.

- Name: the classic one (``"a"`` + UID, 32 characters), so a load balancer cloud-provider-aws
  created for the Service is found and adopted. Type ``network``; scheme ``internal`` with the
  ``internal`` annotation; one subnet per zone (:mod:`ccm_aws.lbnetwork`), with the
  ``eip-allocations`` as subnet mappings (as many as subnets). Subnets and scheme are set at
  creation only, as upstream.
- Tags on the load balancer, its listeners and target groups: ``additional-resource-tags``,
  ``kubernetes.io/service-name`` and the cluster's ownership tag.
- One listener per Service port, forwarding to a target group on the port's node port, named as
  upstream (:func:`target_group_name`: ``k8s-<ns:8>-<name:8>-<sha1:10>`` over the cluster ID, the
  Service, both ports, the target protocol and type and the health check's protocol and interval).
  A listener whose node port, target protocol, health-check protocol or interval changes gets a
  new target group and the old one is deleted; other health-check changes modify it in place.
  TLS listeners (``ssl-cert``/``ssl-ports``) carry the certificate.
- Targets: the running instances of the (``target-node-labels``-filtered) Nodes, registered on
  the node port, in chunks of 100; others deregistered. A stopped instance is left out (AWS
  refuses it as a target).
- The backends' security groups admit the NLB's clients and health checks
  (:mod:`ccm_aws.nlbrules`) unless ``[Global] DisableSecurityGroupIngress``.
- ``load_balancing.cross_zone.enabled`` follows the ``cross-zone`` annotation (default false).
- Delete: the load balancer, then its target groups (and those a crash left without a listener).
- Status: the DNS name as hostname while the NLB is ``active`` or ``provisioning``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ccm.cloudprovider import LoadBalancerIngress, LoadBalancerStatus, Node, Service
from ccm.errors import CloudProviderError
from ccm_aws import annotations as ann
from ccm_aws import nlbrules
from ccm_aws.annotations import PortMapping
from ccm_aws.api import AWSApi, aws_code
from ccm_aws.elbrules import TAG_SERVICE_NAME
from ccm_aws.lbnetwork import LBNetwork, instance_ids
from ccm_aws.tags import RESOURCE_LIFECYCLE_OWNED, ClusterTagging

__all__ = ["NetworkLoadBalancers", "target_group_name"]

_log = logging.getLogger("ccm_aws")

TARGET_TYPE = "instance"
CHUNK = 100
ATTR_CROSS_ZONE = "load_balancing.cross_zone.enabled"
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_TARGETABLE = ("pending", "running")


def target_group_name(
    cluster_id: str,
    namespace: str,
    name: str,
    port: int,
    node_port: int,
    protocol: str,
    target_type: str,
    health_check_protocol: str,
    health_check_interval: int,
) -> str:
    """Upstream ``buildTargetGroupName``."""
    digest = hashlib.sha1(usedforsecurity=False)
    for part in (
        cluster_id,
        namespace,
        name,
        str(port),
        str(node_port),
        protocol,
        target_type,
        health_check_protocol,
        str(health_check_interval),
    ):
        digest.update(part.encode())
    ns, svc = _NOT_ALNUM.sub("", namespace), _NOT_ALNUM.sub("", name)
    return f"k8s-{ns[:8]}-{svc[:8]}-{digest.hexdigest()[:10]}"


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


class _TargetGroupNotFound(Exception):
    """DescribeTargetGroups found none (AWS's TargetGroupNotFound)."""


class NetworkLoadBalancers:
    """The NLB half of the provider's LoadBalancer capability."""

    def __init__(
        self,
        api: AWSApi,
        tagging: ClusterTagging,
        network: LBNetwork,
        *,
        disable_security_group_ingress: bool = False,
    ) -> None:
        self.disable_security_group_ingress = disable_security_group_ingress
        self.api = api
        self.tagging = tagging
        self.network = network

    # -- reading ---------------------------------------------------------------------------------

    async def describe(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self.api.call("elbv2", "describe_load_balancers", Names=[name])
        except CloudProviderError as exc:
            if aws_code(exc) == "LoadBalancerNotFound":
                return None
            raise
        for lb in found.get("LoadBalancers") or ():
            if lb.get("Type") == "network":
                return dict(lb)
        raise CloudProviderError(f"NLB '{name}' could not be found")

    @staticmethod
    def status(lb: Mapping[str, Any]) -> LoadBalancerStatus:
        hostname = str(lb.get("DNSName") or "")
        state = str((lb.get("State") or {}).get("Code") or "")
        if hostname and state in ("active", "provisioning"):
            return LoadBalancerStatus(ingress=(LoadBalancerIngress(hostname=hostname),))
        return LoadBalancerStatus()

    def _tg_name(self, service: Service, m: PortMapping) -> str:
        return target_group_name(
            self.tagging.cluster_id,
            service.namespace,
            service.name,
            m.frontend_port,
            m.traffic_port,
            m.traffic_protocol,
            TARGET_TYPE,
            m.health_check.protocol,
            m.health_check.interval,
        )

    async def _targets(self, nodes: Sequence[Node], service: Service) -> dict[str, Any]:
        """The targetable instances of the Service's Nodes, by ID."""
        ids = instance_ids(ann.filter_target_nodes(nodes, service.annotations))
        found = await self.network.instances.by_ids(ids) if ids else {}
        return {
            i: d
            for i, d in sorted(found.items())
            if str((d.get("State") or {}).get("Name") or "") in _TARGETABLE
        }

    async def _sync_ingress(
        self,
        name: str,
        lb: Mapping[str, Any] | None,
        service: Service,
        mappings: Sequence[PortMapping],
        instances: Sequence[Mapping[str, Any]],
    ) -> None:
        if self.disable_security_group_ingress:
            return
        wanted: set[nlbrules.Rule] = set()
        if lb is not None and instances:
            subnets = [str(z["SubnetId"]) for z in lb.get("AvailabilityZones") or ()]
            described = await self.api.paginate(
                "ec2",
                "describe_subnets",
                "Subnets",
                Filters=[{"Name": "subnet-id", "Values": subnets}],
            )
            cidrs = sorted(str(s["CidrBlock"]) for s in described)
            wanted = nlbrules.wanted_rules(name, mappings, ann.source_ranges(service), cidrs)
        await nlbrules.sync_nlb_ingress(self.api, self.tagging, name, instances, wanted)

    # -- ensure ----------------------------------------------------------------------------------

    async def ensure(
        self, name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        mappings = ann.nlb_mappings(service)
        cross_zone = ann.nlb_cross_zone(service)
        targets = await self._targets(nodes, service)
        internal = ann.is_internal(service)
        tags = self.tagging.build_tags(
            RESOURCE_LIFECYCLE_OWNED,
            {
                **ann.key_values(service.annotations, ann.ADDITIONAL_TAGS),
                TAG_SERVICE_NAME: service.key,
            },
        )
        lb = await self.describe(name)
        if lb is None:
            vpc = await self.network.vpc(instance_ids(nodes))
            subnets = await self.network.subnets(vpc, service, internal)
            mapping_args = [{"SubnetId": s} for s in subnets]
            if ann.EIP_ALLOCATIONS in service.annotations:
                raw = service.annotations[ann.EIP_ALLOCATIONS]
                eips = raw.split(",")
                if len(eips) != len(subnets):
                    raise ann.AnnotationError(
                        ann.EIP_ALLOCATIONS,
                        raw,
                        f"Must have same number of EIP AllocationIDs ({len(eips)}) and "
                        f"SubnetIDs ({len(subnets)})",
                    )
                for arg, eip in zip(mapping_args, eips, strict=True):
                    arg["AllocationId"] = eip
            _log.info("Creating load balancer for %s with name: %s", service.key, name)
            created = await self.api.call(
                "elbv2",
                "create_load_balancer",
                Name=name,
                Type="network",
                Scheme="internal" if internal else "internet-facing",
                SubnetMappings=mapping_args,
                Tags=_tag_list(tags),
            )
            lb = dict(created["LoadBalancers"][0])
        await self._sync_listeners(lb, service, mappings, list(targets), tags)
        await self._sync_attributes(str(lb["LoadBalancerArn"]), cross_zone)
        await self._sync_ingress(name, lb, service, mappings, list(targets.values()))
        return self.status(lb)

    async def _sync_attributes(self, arn: str, cross_zone: str) -> None:
        found = await self.api.call(
            "elbv2", "describe_load_balancer_attributes", LoadBalancerArn=arn
        )
        have = {a["Key"]: a["Value"] for a in found.get("Attributes") or ()}
        if have.get(ATTR_CROSS_ZONE) != cross_zone:
            await self.api.call(
                "elbv2",
                "modify_load_balancer_attributes",
                LoadBalancerArn=arn,
                Attributes=[{"Key": ATTR_CROSS_ZONE, "Value": cross_zone}],
            )

    async def _sync_listeners(
        self,
        lb: Mapping[str, Any],
        service: Service,
        mappings: Sequence[PortMapping],
        targets: Sequence[str],
        tags: Mapping[str, str],
    ) -> None:
        arn, vpc = str(lb["LoadBalancerArn"]), str(lb["VpcId"])
        listeners, groups = await self._listeners_and_groups(arn)
        by_node_port = {int(g["Port"]): g for g in groups.values()}
        # One listener per port (AWS allows no more): a protocol change modifies it in place.
        actual = {int(x["Port"]): x for x in listeners}
        for m in mappings:
            listener = actual.get(m.frontend_port)
            if listener is None:
                group = await self._ensure_target_group(None, service, m, targets, vpc, tags)
                args = self._listener_args(m, group)
                _log.info("Creating load balancer listener for %s", service.key)
                await self.api.call(
                    "elbv2", "create_listener", LoadBalancerArn=arn, Tags=_tag_list(tags), **args
                )
                continue
            found = by_node_port.get(m.traffic_port)
            stale = found is None or (
                str(found.get("Protocol")) != m.traffic_protocol
                or str(found.get("HealthCheckProtocol") or "").upper() != m.health_check.protocol
                or int(found.get("HealthCheckIntervalSeconds") or 0) != m.health_check.interval
            )
            group = await self._ensure_target_group(
                None if stale else found, service, m, targets, vpc, tags
            )
            if stale or self._listener_differs(listener, m, group):
                await self.api.call(
                    "elbv2",
                    "modify_listener",
                    ListenerArn=listener["ListenerArn"],
                    **self._listener_args(m, group),
                )
            if stale:
                old = self._forwarded_group(listener)
                if old and old != group["TargetGroupArn"]:
                    await self._delete_target_group(old)
        wanted = {m.frontend_port for m in mappings}
        for key, listener in sorted(actual.items()):
            if key not in wanted:
                await self.api.call("elbv2", "delete_listener", ListenerArn=listener["ListenerArn"])
                old = self._forwarded_group(listener)
                if old:
                    await self._delete_target_group(old)

    @staticmethod
    def _forwarded_group(listener: Mapping[str, Any]) -> str:
        actions = listener.get("DefaultActions") or ()
        return str(actions[0].get("TargetGroupArn") or "") if actions else ""

    @staticmethod
    def _listener_args(m: PortMapping, group: Mapping[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Port": m.frontend_port,
            "Protocol": m.frontend_protocol,
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}],
        }
        if m.frontend_protocol == "TLS":
            args["Certificates"] = [{"CertificateArn": m.certificate}]
        return args

    def _listener_differs(
        self, listener: Mapping[str, Any], m: PortMapping, group: Mapping[str, Any]
    ) -> bool:
        if str(listener.get("Protocol")) != m.frontend_protocol:
            return True
        certificates = [str(c.get("CertificateArn")) for c in listener.get("Certificates") or ()]
        if m.frontend_protocol == "TLS":
            if certificates[:1] != [m.certificate]:
                return True
        elif certificates:
            return True  # a TLS listener to turn into TCP (moto reports an SslPolicy on TCP)
        return self._forwarded_group(listener) != str(group["TargetGroupArn"])

    async def _ensure_target_group(
        self,
        group: Mapping[str, Any] | None,
        service: Service,
        m: PortMapping,
        targets: Sequence[str],
        vpc: str,
        tags: Mapping[str, str],
    ) -> Mapping[str, Any]:
        hc = m.health_check
        if group is None:
            name = self._tg_name(service, m)
            _log.info("Creating load balancer target group for %s with name: %s", service.key, name)
            args: dict[str, Any] = {
                "Name": name,
                "VpcId": vpc,
                "Port": m.traffic_port,
                "Protocol": m.traffic_protocol,
                "TargetType": TARGET_TYPE,
                "HealthCheckIntervalSeconds": hc.interval,
                "HealthCheckPort": hc.port,
                "HealthCheckProtocol": hc.protocol,
                "HealthyThresholdCount": hc.healthy,
                "UnhealthyThresholdCount": hc.unhealthy,
                "Tags": _tag_list(tags),
            }
            if hc.protocol != "TCP":
                args["HealthCheckPath"] = hc.path
            try:
                created = await self.api.call("elbv2", "create_target_group", **args)
            except CloudProviderError as exc:
                if aws_code(exc) != "DuplicateTargetGroupName":
                    raise
                # Made by an earlier try that failed after it (AWS itself answers such a
                # repeated create with the existing group).
                created = {"TargetGroups": await self._describe_groups(Names=[name])}
            group = dict(created["TargetGroups"][0])
            await self._sync_targets(str(group["TargetGroupArn"]), m.traffic_port, targets, ())
            return group
        arn = str(group["TargetGroupArn"])
        health = await self.api.call("elbv2", "describe_target_health", TargetGroupArn=arn)
        current = [
            (str(d["Target"]["Id"]), int(d["Target"].get("Port") or 0))
            for d in health.get("TargetHealthDescriptions") or ()
            if (d.get("TargetHealth") or {}).get("Reason") != "Target.DeregistrationInProgress"
        ]
        await self._sync_targets(arn, m.traffic_port, targets, current)
        changes: dict[str, Any] = {}
        if str(group.get("HealthCheckPort")) != hc.port:
            changes["HealthCheckPort"] = hc.port
        if int(group.get("HealthyThresholdCount") or 0) != hc.healthy or (
            int(group.get("UnhealthyThresholdCount") or 0) != hc.unhealthy
        ):
            changes["HealthyThresholdCount"] = hc.healthy
            changes["UnhealthyThresholdCount"] = hc.unhealthy
        if hc.protocol != "TCP" and str(group.get("HealthCheckPath") or "") != hc.path:
            changes["HealthCheckPath"] = hc.path
        if changes:
            await self.api.call("elbv2", "modify_target_group", TargetGroupArn=arn, **changes)
        return group

    async def _sync_targets(
        self,
        arn: str,
        port: int,
        wanted: Sequence[str],
        current: Sequence[tuple[str, int]],
    ) -> None:
        want = {(i, port) for i in wanted}
        have = set(current)
        gone = sorted(have - want)
        new = sorted(want - have)
        # Deregister first, as upstream: a replacement fits under the target limit.
        for start in range(0, len(gone), CHUNK):
            await self.api.call(
                "elbv2",
                "deregister_targets",
                TargetGroupArn=arn,
                Targets=[{"Id": i, "Port": p} for i, p in gone[start : start + CHUNK]],
            )
        for start in range(0, len(new), CHUNK):
            await self.api.call(
                "elbv2",
                "register_targets",
                TargetGroupArn=arn,
                Targets=[{"Id": i, "Port": p} for i, p in new[start : start + CHUNK]],
            )

    async def _listeners_and_groups(
        self, arn: str
    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """The listeners of the load balancer ``arn`` and the target groups they forward to, with
        those listed as the load balancer's (moto lists only the groups of its first listeners)."""
        listeners = await self.api.paginate(
            "elbv2", "describe_listeners", "Listeners", LoadBalancerArn=arn
        )
        groups: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(_TargetGroupNotFound):
            for group in await self._describe_groups(LoadBalancerArn=arn):
                groups[str(group["TargetGroupArn"])] = group
        forwarded = sorted({self._forwarded_group(x) for x in listeners} - set(groups) - {""})
        if forwarded:
            for group in await self._describe_groups(TargetGroupArns=forwarded):
                groups[str(group["TargetGroupArn"])] = group
        return listeners, groups

    async def _describe_groups(self, **params: Any) -> list[dict[str, Any]]:
        try:
            return await self.api.paginate(
                "elbv2", "describe_target_groups", "TargetGroups", **params
            )
        except CloudProviderError as exc:
            if aws_code(exc) == "TargetGroupNotFound":
                raise _TargetGroupNotFound() from exc
            raise

    # -- delete ----------------------------------------------------------------------------------

    async def _delete_target_group(self, arn: str) -> None:
        try:
            await self.api.call("elbv2", "delete_target_group", TargetGroupArn=arn)
        except CloudProviderError as exc:
            if aws_code(exc) != "TargetGroupNotFound":
                raise

    async def orphans(self, service: Service) -> list[str]:
        """The ARNs of the target groups named for the Service's current ports (left by a crash
        between their creation and their listener's, or by a delete cut short)."""
        names: list[str] = []
        # Annotations it cannot parse: it created no target group either.
        with contextlib.suppress(CloudProviderError):
            names = sorted({self._tg_name(service, m) for m in ann.nlb_mappings(service)})
        arns: set[str] = set()
        for tg_name in names:
            with contextlib.suppress(_TargetGroupNotFound):
                arns |= {
                    str(g["TargetGroupArn"]) for g in await self._describe_groups(Names=[tg_name])
                }
        return sorted(arns)

    async def delete(self, name: str, service: Service, *, orphans: bool = True) -> None:
        """Delete the NLB ``name``: its listeners, its target groups (with the ``orphans`` of
        the Service's ports), its rules in the Nodes' groups, and the NLB itself last, so that
        a delete cut short leaves the NLB for the next try to find."""
        lb = await self.describe(name)
        arns: set[str] = set(await self.orphans(service)) if orphans else set()
        if lb is not None:
            listeners, groups = await self._listeners_and_groups(str(lb["LoadBalancerArn"]))
            for listener in listeners:
                await self.api.call("elbv2", "delete_listener", ListenerArn=listener["ListenerArn"])
            arns |= set(groups)
        for arn in sorted(arns):
            await self._delete_target_group(arn)
        if lb is not None:
            await self._sync_ingress(name, None, service, (), ())
            _log.info("Deleting load balancer %s of %s", name, service.key)
            await self.api.call(
                "elbv2", "delete_load_balancer", LoadBalancerArn=lb["LoadBalancerArn"]
            )
