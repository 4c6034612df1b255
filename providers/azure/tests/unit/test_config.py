"""``azure.json``: upstream's keys, credentials in upstream's order, one-line errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.identity.aio import (
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from ccm_azure.api import make_credential, resolve_endpoints
from ccm_azure.config import AzureConfig
from ccm_azure.provider import factory
from ccm_azure.testing.arm import FakeArm

from ccm import errors

BASE = {
    "cloud": "AzurePublicCloud",
    "tenantId": "t1",
    "subscriptionId": "s1",
    "resourceGroup": "rg",
    "location": "westeurope",
    "vnetName": "vnet",
    "vnetResourceGroup": "net-rg",
    "subnetName": "subnet",
    "securityGroupName": "nsg",
    "routeTableName": "rt",
    "vmType": "standard",
    "loadBalancerSku": "Standard",
    "aadClientId": "c1",
    "aadClientSecret": "s3cret",
    "userAssignedIdentityID": "",
    "useInstanceMetadata": True,
    "cloudProviderRateLimit": True,
}


def load(**changes: Any) -> AzureConfig:
    doc = {**BASE, **changes}
    return AzureConfig.parse(json.dumps({k: v for k, v in doc.items() if v is not None}).encode())


def test_upstream_azure_json_is_read() -> None:
    config = load()
    assert (config.tenant_id, config.subscription_id, config.resource_group) == ("t1", "s1", "rg")
    assert config.vnet_resource_group == "net-rg"
    assert config.route_table_group == "rg"
    assert config.aad_client_secret is not None
    assert config.aad_client_secret.get_secret_value() == "s3cret"
    assert config.known_cloud is not None
    assert config.known_cloud.resource_manager == "https://management.azure.com/"
    assert load(vmType=None).vm_set_type == "standard"
    assert load(cloud="AzureChinaCloud").known_cloud.authority == "https://login.chinacloudapi.cn/"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subscriptionId": ""}, "cloud config: subscriptionId: required"),
        ({"location": None}, "cloud config: location: required"),
        ({"vmType": "vmssflex"}, "cloud config: vmType: Input should be 'standard', 'vmss'"),
        ({"cloud": "Mars"}, "cloud config: cloud: unknown cloud 'Mars'"),
        (
            {"resourceManagerEndpoint": "http://arm.local"},
            "cloud config: resourceManagerEndpoint: must be an https:// URL",
        ),
        ({"aadClientSecret": None}, "cloud config: aadClientId: no credentials"),
        ({"tenantId": ""}, "cloud config: tenantId: required with a service principal"),
        (
            {"useFederatedWorkloadIdentityExtension": True},
            "cloud config: aadFederatedTokenFile: required with useFederatedWorkload",
        ),
        (
            {"useManagedIdentityExtension": "maybe"},
            "cloud config: useManagedIdentityExtension: Input should be a valid boolean",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ConfigFileError) as caught:
        load(**changes)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_no_file_is_an_error() -> None:
    with pytest.raises(errors.ConfigFileError, match=r"needs azure\.json"):
        factory(None)


async def test_credentials_in_upstream_order(tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("jwt")
    endpoints = load().known_cloud
    assert endpoints is not None
    cases = [
        (load(), ClientSecretCredential),
        (
            load(useManagedIdentityExtension=True, userAssignedIdentityID="u1"),
            ManagedIdentityCredential,
        ),
        (load(aadClientSecret=None, useManagedIdentityExtension=True), ManagedIdentityCredential),
        (
            load(
                useManagedIdentityExtension=True,
                useFederatedWorkloadIdentityExtension=True,
                aadFederatedTokenFile=str(token),
            ),
            WorkloadIdentityCredential,
        ),
    ]
    for config, kind in cases:
        credential = make_credential(config, endpoints)
        try:
            assert isinstance(credential, kind), (config, credential)
        finally:
            await credential.close()


async def test_resource_manager_endpoint_reads_the_clouds_metadata(
    arm: FakeArm,
) -> None:
    config = load(resourceManagerEndpoint=arm.url)
    endpoints = await resolve_endpoints(config)
    assert endpoints.resource_manager == arm.url
    assert endpoints.authority == arm.url
    assert endpoints.scope == arm.url.rstrip("/") + "/.default"
    bad = load(resourceManagerEndpoint="https://127.0.0.1:1/")
    with pytest.raises(errors.CloudProviderError, match="cannot read the cloud metadata"):
        await resolve_endpoints(bad)
