"""The Azure SDK clients the provider calls, and the translation of their errors into ccm's.

The provider uses the SDK's asyncio clients (``azure.mgmt.compute.aio``,
``azure.mgmt.network.aio``, ``azure.identity.aio``) rather than the blocking ones behind
``run_blocking``: one aiohttp connection pool serves every concurrent call, no thread of the pool
stays busy with a request whose caller gave up, and a cancelled call (``--cloud-call-timeout``,
shutdown) really stops its request. They are created in :meth:`AzureApi.open` (on the running
event loop) and closed in :meth:`AzureApi.close`.

The SDK's own retries are off (``retry_total=0``): ccm decides. :data:`RETRY` retries transient
failures (5xx, connection errors) a few times; a 429 becomes :class:`ccm.errors.RetryAfterError`
with the server's ``Retry-After``; a 404 is "not found" (:func:`is_not_found`). Long-running
operations are polled every :data:`POLL_INTERVAL` seconds, bounded by the caller's
``--cloud-call-timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.network.aio import NetworkManagementClient

from ccm import errors
from ccm.cloudprovider import retry
from ccm_azure.config import AzureConfig, CloudEndpoints

__all__ = [
    "POLL_INTERVAL",
    "RETRY",
    "AzureApi",
    "PreconditionFailedError",
    "classify",
    "is_not_found",
]

_log = logging.getLogger("ccm_azure")

T = TypeVar("T")

#: Seconds between two polls of a long-running operation.
POLL_INTERVAL = 0.5
#: Connect and read timeouts of each request (shorter than ``--cloud-call-timeout``).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20


def classify(exc: Exception) -> retry.Verdict | None:
    """The retry verdict on an Azure SDK exception."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        response: Any = exc.response
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if exc.status_code == 404:
            return retry.NOT_FOUND
        return retry.classify_http_status(exc.status_code, retry_after=retry_after)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return retry.TRANSIENT
    return None


#: How every ARM call is retried (attempts times backoff well under ``--cloud-call-timeout``).
RETRY = retry.RetryPolicy(attempts=3, initial_backoff=0.2, max_backoff=2.0, classify=classify)


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is ARM's 404 (``ResourceNotFound``, ``NotFound``)."""
    return isinstance(exc, HttpResponseError) and exc.status_code == 404


class PreconditionFailedError(errors.CloudProviderError):
    """ARM refused a write whose ``If-Match`` etag is stale (HTTP 412): read again and retry."""


def cloud_error(what: str, exc: Exception) -> errors.CloudProviderError:
    """``exc`` as a ccm error naming the call (the ARM error code and message kept)."""
    if isinstance(exc, errors.CloudProviderError):
        return exc
    if isinstance(exc, HttpResponseError):
        code = exc.error.code if exc.error is not None else ""
        message = exc.error.message if exc.error is not None else exc.message
        kind = PreconditionFailedError if exc.status_code == 412 else errors.CloudProviderError
        return kind(f"{what}: HTTP {exc.status_code} {code}: {message}")
    return errors.CloudProviderError(f"{what}: {type(exc).__name__}: {exc}")


async def resolve_endpoints(config: AzureConfig) -> CloudEndpoints:
    """The named cloud's endpoints, or those of ``resourceManagerEndpoint``'s metadata document
    (``/metadata/endpoints``: its ``authentication.loginEndpoint`` issues the tokens), as
    upstream reads an Azure Stack Hub's."""
    known = config.known_cloud
    if known is not None:
        return known
    base = config.resource_manager_endpoint.rstrip("/") + "/"
    url = base + "metadata/endpoints?api-version=2015-01-01"
    timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT + READ_TIMEOUT)
    ca = transport_options().get("connection_verify")
    tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, ssl=tls) as response,
        ):
            response.raise_for_status()
            doc = await response.json(content_type=None)
        login = str(doc["authentication"]["loginEndpoint"])
    except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError) as exc:
        raise errors.CloudProviderError(
            f"resourceManagerEndpoint: cannot read the cloud metadata at {url}: {exc}"
        ) from exc
    return CloudEndpoints(base, login if login.endswith("/") else login + "/")


def transport_options() -> dict[str, Any]:
    """The TLS options of every client: ``SSL_CERT_FILE`` names the CA bundle to trust instead of
    the system's (a private cloud's CA), read when the clients are created."""
    ca = os.environ.get("SSL_CERT_FILE")
    return {"connection_verify": ca} if ca else {}


def make_credential(config: AzureConfig, endpoints: CloudEndpoints) -> AsyncTokenCredential:
    """The credential of ``config``, in upstream's order of precedence."""
    authority = endpoints.authority
    tls = transport_options()
    if config.use_federated_workload_identity_extension:
        return WorkloadIdentityCredential(
            tenant_id=config.tenant_id,
            client_id=config.aad_client_id,
            token_file_path=config.aad_federated_token_file,
            authority=authority,
            **tls,
        )
    if config.use_managed_identity_extension:
        return ManagedIdentityCredential(client_id=config.user_assigned_identity_id or None, **tls)
    if config.aad_client_secret is not None:
        return ClientSecretCredential(
            config.tenant_id,
            config.aad_client_id,
            config.aad_client_secret.get_secret_value(),
            authority=authority,
            **tls,
        )
    password = config.aad_client_cert_password
    return CertificateCredential(
        config.tenant_id,
        config.aad_client_id,
        config.aad_client_cert_path,
        password=password.get_secret_value() if password is not None else None,
        authority=authority,
    )


class AzureApi:
    """The compute and network clients of one subscription, opened on the event loop."""

    def __init__(self, config: AzureConfig, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.config = config
        self.poll_interval = poll_interval
        self.subscription_id = config.subscription_id
        self._stack = contextlib.AsyncExitStack()
        self._compute: ComputeManagementClient | None = None
        self._network: NetworkManagementClient | None = None
        self.endpoints: CloudEndpoints | None = None

    async def open(self) -> None:
        """Resolve the endpoints and build the credential and clients (no ARM call)."""
        if self._compute is not None:
            return
        endpoints = await resolve_endpoints(self.config)
        credential = make_credential(self.config, endpoints)
        await self._stack.enter_async_context(credential)
        common: dict[str, Any] = {
            "base_url": endpoints.resource_manager,
            "credential_scopes": [endpoints.scope],
            "retry_total": 0,
            "polling_interval": self.poll_interval,
            "connection_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            **transport_options(),
        }
        self._compute = await self._stack.enter_async_context(
            ComputeManagementClient(credential, self.subscription_id, **common)
        )
        self._network = await self._stack.enter_async_context(
            NetworkManagementClient(credential, self.subscription_id, **common)
        )
        self.endpoints = endpoints

    async def close(self) -> None:
        await self._stack.aclose()
        self._compute = self._network = None

    @property
    def compute(self) -> ComputeManagementClient:
        if self._compute is None:
            raise errors.CloudProviderError("the Azure clients are not open")
        return self._compute

    @property
    def network(self) -> NetworkManagementClient:
        if self._network is None:
            raise errors.CloudProviderError("the Azure clients are not open")
        return self._network

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` under :data:`RETRY`; a 404 is raised unchanged (see
        :func:`is_not_found`), throttling as ``RetryAfterError``, anything else as a
        ``CloudProviderError`` naming ``what``."""
        await self.open()
        try:
            return await RETRY.call(what, fn)
        except errors.CCMError:
            raise
        except Exception as exc:
            if is_not_found(exc):
                raise
            raise cloud_error(what, exc) from exc

    async def wait(self, what: str, begin: Callable[[], Awaitable[Any]]) -> Any:
        """Start a long-running operation (``begin`` under :data:`RETRY`) and poll it to its end
        every ``poll_interval`` seconds; the caller's timeout bounds the whole."""
        poller = await self.call(what, begin)
        try:
            return await poller.result()
        except errors.CCMError:
            raise
        except Exception as exc:
            if is_not_found(exc):
                raise
            raise cloud_error(what, exc) from exc

    async def collect(self, what: str, pages: Callable[[], Any]) -> list[Any]:
        """Every item of a paged list call."""

        async def run() -> list[Any]:
            return [item async for item in pages()]

        return await self.call(what, run)
