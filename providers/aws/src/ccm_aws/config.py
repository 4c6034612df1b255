"""The AWS provider's ``--cloud-config``: upstream's INI file, read the way cloud-provider-aws
reads it (``pkg/providers/v1/config/config.go``)::

    [Global]
    Zone = us-east-1a                 ; the region is derived from it when set (upstream)
    Region = us-east-1                ; else this; else AWS_REGION/AWS_DEFAULT_REGION; else IMDS
    VPC = vpc-0123                    ; the cluster's VPC (load balancers, security groups)
    SubnetID = subnet-0123            ; the subnet for load balancers when none is tagged
    RouteTableID = rtb-0123           ; the route table for pod CIDRs (else the cluster-tagged one)
    RoleARN = arn:aws:iam::1:role/ccm ; assume this role for every call
    SourceARN = arn:aws:...           ; passed as the assume-role source
    KubernetesClusterTag = prod       ; legacy cluster ID (tag KubernetesCluster=prod)
    KubernetesClusterID = prod        ; cluster ID (tag kubernetes.io/cluster/prod)
    DisableSecurityGroupIngress = false
    ElbSecurityGroup = sg-0123        ; one security group for every load balancer
    NodeIPFamilies = ipv4             ; repeated: which addresses Nodes get, in this order
    NodeIPFamilies = ipv6

    [ServiceOverride "1"]
    Service = ec2                     ; ec2 / EC2, elb / Elastic Load Balancing, elbv2, sts
    Region = us-east-1                ; the override applies to clients of this region
    URL = https://ec2.example.com     ; the endpoint
    SigningRegion = us-east-1         ; the region requests are signed for
    SigningName = ec2                 ; accepted, as upstream (botocore signs for the service)
    SigningMethod = v4                ; accepted, as upstream

Unknown sections and variables are ignored (as upstream, ``gcfg.FatalOnly``). A malformed file
raises :class:`ccm.errors.ConfigError` with one line naming the section and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ccm.errors import ConfigError
from ccm_aws import ini

__all__ = ["AWSConfig", "ServiceOverride", "az_to_region", "boto_service_name"]

#: Upstream ``NodeIPFamilies`` values.
IP_FAMILIES = ("ipv4", "ipv6")

#: ``Service`` values of ``[ServiceOverride]`` (lower-cased) → the boto3 service name. Upstream
#: matches the SDK's service IDs (``EC2``, ``Elastic Load Balancing``, ...); configs written for
#: the older SDK name the endpoint prefix (``ec2``, ``elasticloadbalancing``): both are accepted.
_SERVICES = {
    "ec2": "ec2",
    "elastic load balancing": "elb",
    "elasticloadbalancing": "elb",
    "elb": "elb",
    "elastic load balancing v2": "elbv2",
    "elasticloadbalancingv2": "elbv2",
    "elbv2": "elbv2",
    "sts": "sts",
    "kms": "kms",
}

_AZ_REGION = re.compile(r"^([a-zA-Z]+-)+\d+")


def az_to_region(az: str) -> str:
    """Upstream ``azToRegion``: ``us-east-1a`` → ``us-east-1``; ValueError when not an AZ."""
    if not az:
        raise ValueError("invalid (empty) AZ")
    match = _AZ_REGION.match(az)
    if match is None:
        raise ValueError(f"invalid AZ: {az}")
    return match.group(0)


def boto_service_name(service: str) -> str | None:
    """The boto3 service name a ``[ServiceOverride]`` ``Service`` value names, if known."""
    return _SERVICES.get(service.strip().lower())


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceOverride:
    """One ``[ServiceOverride "key"]`` section."""

    key: str
    service: str
    region: str
    url: str
    signing_region: str
    signing_name: str = ""
    signing_method: str = ""

    @property
    def boto_service(self) -> str | None:
        return boto_service_name(self.service)


@dataclass(frozen=True, slots=True, kw_only=True)
class AWSConfig:
    """The parsed ``[Global]`` and ``[ServiceOverride]`` sections."""

    zone: str = ""
    region: str = ""
    vpc: str = ""
    subnet_id: str = ""
    route_table_id: str = ""
    role_arn: str = ""
    source_arn: str = ""
    kubernetes_cluster_tag: str = ""
    kubernetes_cluster_id: str = ""
    disable_security_group_ingress: bool = False
    elb_security_group: str = ""
    node_ip_families: tuple[str, ...] = ("ipv4",)
    service_overrides: tuple[ServiceOverride, ...] = ()

    @property
    def cluster_id(self) -> str:
        """Upstream ``awsTagging.init``: the legacy tag wins; both set must agree (checked at
        parse time)."""
        return self.kubernetes_cluster_tag or self.kubernetes_cluster_id

    @property
    def uses_legacy_tags(self) -> bool:
        return bool(self.kubernetes_cluster_tag)

    def override_for(self, service: str, region: str) -> ServiceOverride | None:
        """The override of boto3 service ``service`` for clients of ``region``, if any."""
        for override in self.service_overrides:
            if override.boto_service == service and override.region == region:
                return override
        return None

    @classmethod
    def parse(cls, data: bytes | None) -> AWSConfig:
        """Parse the bytes of ``--cloud-config`` (``None``: no file, every default)."""
        if not data:
            return cls()
        doc = ini.parse_ini(data)
        fields: dict[str, object] = {}
        glob = doc.section("Global")
        if glob is not None:
            for attr, key in (
                ("zone", "Zone"),
                ("region", "Region"),
                ("vpc", "VPC"),
                ("subnet_id", "SubnetID"),
                ("route_table_id", "RouteTableID"),
                ("role_arn", "RoleARN"),
                ("source_arn", "SourceARN"),
                ("kubernetes_cluster_tag", "KubernetesClusterTag"),
                ("kubernetes_cluster_id", "KubernetesClusterID"),
                ("elb_security_group", "ElbSecurityGroup"),
            ):
                fields[attr] = (glob.last(key) or "").strip()
            if glob.has("DisableSecurityGroupIngress"):
                fields["disable_security_group_ingress"] = ini.parse_bool(
                    glob.last("DisableSecurityGroupIngress"),
                    "[Global] DisableSecurityGroupIngress",
                )
            families = [f.strip() for f in glob.all("NodeIPFamilies")]
            for family in families:
                if family not in IP_FAMILIES:
                    raise ConfigError(
                        f"cloud config: [Global] NodeIPFamilies: {family!r} is not one of "
                        f"{', '.join(IP_FAMILIES)}"
                    )
            if families:
                fields["node_ip_families"] = tuple(families)
        legacy = str(fields.get("kubernetes_cluster_tag", ""))
        current = str(fields.get("kubernetes_cluster_id", ""))
        if legacy and current and legacy != current:
            raise ConfigError(
                f"cloud config: [Global] KubernetesClusterTag {legacy!r} and KubernetesClusterID "
                f"{current!r} name different clusters"
            )
        zone = str(fields.get("zone", ""))
        if zone:
            try:
                az_to_region(zone)
            except ValueError as exc:
                raise ConfigError(f"cloud config: [Global] Zone: {exc}") from None
        fields["service_overrides"] = _overrides(doc)
        return cls(**fields)  # type: ignore[arg-type]


def _overrides(doc: ini.IniFile) -> tuple[ServiceOverride, ...]:
    """Upstream ``ValidateOverrides``: every field but the signing name/method is required, one
    override per service and region."""
    out: list[ServiceOverride] = []
    seen: set[tuple[str, str]] = set()
    for section in doc.subsections("ServiceOverride"):
        where = f"cloud config: {section.title}"
        values = {
            key: (section.last(key) or "").strip()
            for key in ("Service", "Region", "URL", "SigningRegion", "SigningName", "SigningMethod")
        }
        for key in ("Service", "Region", "URL", "SigningRegion"):
            if not values[key]:
                raise ConfigError(f"{where} {key}: missing")
        if boto_service_name(values["Service"]) is None:
            raise ConfigError(f"{where} Service: unknown service {values['Service']!r}")
        if not re.match(r"^https?://[^\s/]+", values["URL"]):
            raise ConfigError(f"{where} URL: not an http(s) URL: {values['URL']!r}")
        signature = (str(boto_service_name(values["Service"])), values["Region"])
        if signature in seen:
            raise ConfigError(
                f"{where} Service: duplicate override of {values['Service']} in {values['Region']}"
            )
        seen.add(signature)
        out.append(
            ServiceOverride(
                key=str(section.subsection),
                service=values["Service"],
                region=values["Region"],
                url=values["URL"],
                signing_region=values["SigningRegion"],
                signing_name=values["SigningName"],
                signing_method=values["SigningMethod"],
            )
        )
    return tuple(out)
