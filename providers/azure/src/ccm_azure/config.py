"""The provider's ``--cloud-config``: upstream's ``azure.json`` (JSON, or the same keys in YAML).

Keys are upstream's (``tenantId``, ``subscriptionId``, ``resourceGroup``, ``vmType``, ...); keys
this provider does not read are ignored, as upstream's reader does. Credentials are tried in
upstream's order: workload identity (``useFederatedWorkloadIdentityExtension`` with
``aadFederatedTokenFile``), managed identity (``useManagedIdentityExtension``, with
``userAssignedIdentityID`` for a user-assigned one), then the service principal's secret
(``aadClientId`` + ``aadClientSecret``) or certificate (``aadClientCertPath``).

A bad file is one :class:`ccm.errors.ConfigFileError` line naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ccm.cloudprovider.config import ProviderConfig, Secret
from ccm.cloudprovider.registry import cloud_config_path
from ccm.errors import ConfigFileError

__all__ = ["CLOUDS", "AzureConfig", "CloudEndpoints"]

VM_TYPE_STANDARD = "standard"
VM_TYPE_VMSS = "vmss"


@dataclass(frozen=True, slots=True)
class CloudEndpoints:
    """Where a cloud's Resource Manager and Microsoft Entra ID (the token issuer) are."""

    resource_manager: str
    authority: str

    @property
    def scope(self) -> str:
        """The OAuth scope of Resource Manager tokens."""
        return self.resource_manager.rstrip("/") + "/.default"


#: The clouds upstream knows by name (``cloud``; case-insensitive).
CLOUDS: dict[str, CloudEndpoints] = {
    "azurepubliccloud": CloudEndpoints(
        "https://management.azure.com/", "https://login.microsoftonline.com/"
    ),
    "azurechinacloud": CloudEndpoints(
        "https://management.chinacloudapi.cn/", "https://login.chinacloudapi.cn/"
    ),
    "azureusgovernmentcloud": CloudEndpoints(
        "https://management.usgovcloudapi.net/", "https://login.microsoftonline.us/"
    ),
}


class AzureConfig(ProviderConfig):
    """``azure.json``; see the provider's README for each key."""

    cloud: str = "AzurePublicCloud"
    tenant_id: str = ""
    subscription_id: str = ""
    resource_group: str = ""
    location: str = ""
    vnet_name: str = ""
    vnet_resource_group: str = ""
    subnet_name: str = ""
    security_group_name: str = ""
    security_group_resource_group: str = ""
    route_table_name: str = ""
    route_table_resource_group: str = ""
    primary_availability_set_name: str = ""
    vm_type: Literal["standard", "vmss", ""] = ""
    load_balancer_sku: Literal["standard", "basic", "Standard", "Basic", ""] = ""
    aad_client_id: str = ""
    aad_client_secret: Secret | None = None
    aad_client_cert_path: str = ""
    aad_client_cert_password: Secret | None = None
    use_managed_identity_extension: bool = False
    user_assigned_identity_id: str = Field("", alias="userAssignedIdentityID")
    use_federated_workload_identity_extension: bool = False
    aad_federated_token_file: str = ""
    resource_manager_endpoint: str = ""

    def problem(self) -> tuple[str, str] | None:
        """The first (field, reason) that makes this file unusable, else None."""
        for name in ("subscription_id", "resource_group", "location"):
            if not getattr(self, name):
                return _camel(name), "required"
        if not self.resource_manager_endpoint and self.cloud.lower() not in CLOUDS:
            known = "AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud"
            return "cloud", f"unknown cloud {self.cloud!r} (known: {known})"
        endpoint = self.resource_manager_endpoint
        if endpoint and not endpoint.startswith("https://"):
            return "resourceManagerEndpoint", f"must be an https:// URL, not {endpoint!r}"
        if self.use_federated_workload_identity_extension:
            for name in ("tenant_id", "aad_client_id", "aad_federated_token_file"):
                if not getattr(self, name):
                    return _camel(name), "required with useFederatedWorkloadIdentityExtension"
        elif self.use_managed_identity_extension:
            return None
        elif self.aad_client_secret is not None or self.aad_client_cert_path:
            for name in ("tenant_id", "aad_client_id"):
                if not getattr(self, name):
                    return _camel(name), "required with a service principal"
        else:
            return (
                "aadClientId",
                "no credentials: set aadClientId and aadClientSecret (or aadClientCertPath), "
                "useManagedIdentityExtension or useFederatedWorkloadIdentityExtension",
            )
        return None

    @property
    def vm_set_type(self) -> str:
        """``standard`` unless ``vmss`` is set, as upstream's default."""
        return self.vm_type or VM_TYPE_STANDARD

    @property
    def route_table_group(self) -> str:
        return self.route_table_resource_group or self.resource_group

    @property
    def known_cloud(self) -> CloudEndpoints | None:
        """The named cloud's endpoints; None with ``resourceManagerEndpoint`` (then read from
        that endpoint's metadata)."""
        if self.resource_manager_endpoint:
            return None
        return CLOUDS[self.cloud.lower()]

    @classmethod
    def parse(cls, data: bytes | None) -> AzureConfig:
        """Load ``data``; a missing file is an error (the subscription cannot be guessed)."""
        where = cloud_config_path() or "cloud config"
        if not data or not data.strip():
            raise ConfigFileError(
                where,
                "the Azure provider needs azure.json (subscriptionId, resourceGroup, location "
                "and credentials)",
            )
        config = cls.load(data)
        problem = config.problem()
        if problem is not None:
            raise ConfigFileError(where, problem[1], field=problem[0])
        return config


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
