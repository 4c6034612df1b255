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

The file is read by the toolkit's :class:`~ccm.cloudprovider.config.ProviderConfig` (gcfg's INI
dialect: names case-insensitive, repeated keys as ordered lists, quoted values; the same model
also reads YAML or JSON). Unknown sections and variables are ignored (as upstream,
``gcfg.FatalOnly``). A malformed file raises :class:`ccm.errors.ConfigFileError`: one line naming
the file and the field (``cloud.conf: global.nodeIPFamilies[0]: ...``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from ccm.cloudprovider.config import ProviderConfig

__all__ = ["AWSConfig", "GlobalSection", "ServiceOverride", "az_to_region", "boto_service_name"]

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

Text = Annotated[str, StringConstraints(strip_whitespace=True)]
Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


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


class GlobalSection(ProviderConfig):
    """``[Global]``."""

    zone: Text = ""
    region: Text = ""
    vpc: Text = Field(default="", alias="VPC")
    subnet_id: Text = Field(default="", alias="subnetID")
    route_table_id: Text = Field(default="", alias="routeTableID")
    role_arn: Text = Field(default="", alias="roleARN")
    source_arn: Text = Field(default="", alias="sourceARN")
    kubernetes_cluster_tag: Text = ""
    kubernetes_cluster_id: Text = Field(default="", alias="kubernetesClusterID")
    disable_security_group_ingress: bool = False
    elb_security_group: Text = ""
    node_ip_families: list[Literal["ipv4", "ipv6"]] = Field(
        default_factory=list, alias="nodeIPFamilies"
    )

    @field_validator("zone")
    @classmethod
    def _zone_is_an_az(cls, zone: str) -> str:
        if zone:
            az_to_region(zone)
        return zone

    @model_validator(mode="after")
    def _one_cluster_id(self) -> Self:
        legacy, current = self.kubernetes_cluster_tag, self.kubernetes_cluster_id
        if legacy and current and legacy != current:
            raise ValueError(
                f"KubernetesClusterTag {legacy!r} and KubernetesClusterID {current!r} name "
                "different clusters"
            )
        return self


class ServiceOverride(ProviderConfig):
    """``[ServiceOverride "key"]``: upstream ``ValidateOverrides`` requires all but the signing
    name and method."""

    service: Required
    region: Required
    url: Required = Field(alias="URL")
    signing_region: Required
    signing_name: Text = ""
    signing_method: Text = ""

    @field_validator("service")
    @classmethod
    def _known_service(cls, service: str) -> str:
        if boto_service_name(service) is None:
            raise ValueError(f"unknown service {service!r}")
        return service

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"not an http(s) URL: {url!r}")
        return url

    @property
    def boto_service(self) -> str | None:
        return boto_service_name(self.service)


class AWSConfig(ProviderConfig):
    """The whole file: ``[Global]`` and the ``[ServiceOverride]`` sections."""

    global_: GlobalSection = GlobalSection()
    service_override: dict[str, ServiceOverride] = Field(default_factory=dict)

    @field_validator("service_override")
    @classmethod
    def _one_override_per_service_and_region(
        cls, overrides: dict[str, ServiceOverride]
    ) -> dict[str, ServiceOverride]:
        seen: set[tuple[str | None, str]] = set()
        for key, override in overrides.items():
            signature = (override.boto_service, override.region)
            if signature in seen:
                raise ValueError(
                    f"[ServiceOverride {key!r}]: duplicate override of {override.service} in "
                    f"{override.region}"
                )
            seen.add(signature)
        return overrides

    @classmethod
    def parse(cls, data: bytes | None) -> AWSConfig:
        """Parse the bytes of ``--cloud-config`` (``None``: no file, every default)."""
        return cls.load(data)

    # Flat views of the fields the provider reads.

    @property
    def zone(self) -> str:
        return self.global_.zone

    @property
    def region(self) -> str:
        return self.global_.region

    @property
    def role_arn(self) -> str:
        return self.global_.role_arn

    @property
    def source_arn(self) -> str:
        return self.global_.source_arn

    @property
    def route_table_id(self) -> str:
        return self.global_.route_table_id

    @property
    def node_ip_families(self) -> tuple[str, ...]:
        """``[Global] NodeIPFamilies`` in order; upstream's default is ``ipv4`` alone."""
        return tuple(self.global_.node_ip_families) or ("ipv4",)

    @property
    def cluster_id(self) -> str:
        """Upstream ``awsTagging.init``: the legacy tag wins (both set must agree)."""
        return self.global_.kubernetes_cluster_tag or self.global_.kubernetes_cluster_id

    @property
    def uses_legacy_tags(self) -> bool:
        return bool(self.global_.kubernetes_cluster_tag)

    def override_for(self, service: str, region: str) -> ServiceOverride | None:
        """The override of boto3 service ``service`` for clients of ``region``, if any."""
        for override in self.service_override.values():
            if override.boto_service == service and override.region == region:
                return override
        return None
