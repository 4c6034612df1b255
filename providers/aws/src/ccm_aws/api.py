"""boto3 clients for the provider, the blocking calls run off the event loop, and the translation
of AWS errors into :mod:`ccm.errors`.

Ports the client set-up of cloud-provider-aws (``aws_sdk.go``, ``config.go``: region, endpoint
overrides, assumed role) onto boto3:

- **region**: ``[Global] Zone`` (its region, as upstream), else ``[Global] Region``, else the
  standard boto3 settings (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's config file),
  else the instance metadata service (IMDS); none of them is a one-line ConfigError;
- **credentials**: boto3's standard chain (environment, shared files, web identity, container and
  instance roles); ``[Global] RoleARN`` assumes that role on top of them (refreshed before it
  expires), with ``SourceARN`` passed as the source identity context as upstream does;
- **endpoints**: ``[ServiceOverride]`` sections replace a service's endpoint for the clients of
  their region, signed for ``SigningRegion``;
- **retries**: botocore does not retry (``total_max_attempts=1``); the toolkit's
  :class:`~ccm.cloudprovider.retry.RetryPolicy` does, with :func:`classify`: a server error (5xx)
  or a connection failure is tried again, at most :data:`MAX_ATTEMPTS` tries with a short backoff
  whose waits hold no thread; throttling is never retried here (that would add load and hold a
  controller worker) but raised as RetryAfterError, so the controller requeues the object after
  :data:`THROTTLE_DELAY`; anything else fails at once. Connect and read timeouts are short so a
  stuck call frees its thread well within ``--cloud-call-timeout``.

Errors: a throttled call (``Throttling``, ``RequestLimitExceeded``, ...) raises
:class:`~ccm.errors.RetryAfterError`; ``InvalidInstanceID.NotFound`` raises
:class:`~ccm.errors.InstanceNotFoundError`; every other AWS or connection error raises
:class:`~ccm.errors.CloudProviderError` naming the operation and AWS's error code.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session
import botocore.utils

from ccm.cloudprovider import retry
from ccm.errors import (
    CCMError,
    CloudProviderError,
    ConfigError,
    InstanceNotFoundError,
    RetryAfterError,
)
from ccm_aws.config import AWSConfig, az_to_region

__all__ = [
    "ACTION_LOG_ENV",
    "MAX_ATTEMPTS",
    "THROTTLE_DELAY",
    "AWSApi",
    "resolve_region",
    "translate_error",
]

_log = logging.getLogger("ccm_aws")

T = TypeVar("T")

#: Tries of one call on a transient failure (server error, connection failure), the first included.
MAX_ATTEMPTS = 3
#: Seconds a throttled call waits before the controller tries again (RetryAfterError).
THROTTLE_DELAY = 5.0
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
#: Connections kept per client: the framework's cloud thread pool runs at most this many calls.
MAX_POOL_CONNECTIONS = 32

#: When set, every AWS API call of the provider appends its IAM action (``ec2:DescribeInstances``)
#: as one line to this file: an audit of the permissions a cluster really uses (the IAM policy
#: test records the test suite's calls with it).
ACTION_LOG_ENV = "CCM_AWS_ACTION_LOG"

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "SlowDown",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
    }
)
INSTANCE_NOT_FOUND_CODE = "InvalidInstanceID.NotFound"


def error_code(exc: BaseException) -> str:
    """AWS's error code of a botocore ClientError (``""`` for any other exception)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


_TRANSIENT_BOTOCORE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


def classify(exc: Exception) -> retry.Verdict | None:
    """The retry verdict on an exception of a boto3 call (``None``: the toolkit's defaults)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        if error_code(exc) in THROTTLING_CODES:
            return retry.throttled()
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return retry.TRANSIENT if status >= 500 and status != 501 else retry.FATAL
    if isinstance(exc, _TRANSIENT_BOTOCORE):
        return retry.TRANSIENT
    return None


class AWSError(CloudProviderError):
    """A failed AWS call, with AWS's error code (``LoadBalancerNotFound``...) kept as a field so
    that callers test the code, typed here at the boundary, instead of unwrapping the botocore
    exception from ``__cause__``."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def aws_code(exc: BaseException) -> str:
    """AWS's error code of a failed call (``""`` when the failure was not an AWS error answer)."""
    return exc.code if isinstance(exc, AWSError) else ""


def translate_error(exc: Exception, operation: str) -> Exception:
    """The :mod:`ccm.errors` exception for an exception raised by a boto3 call."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
        if code in THROTTLING_CODES:
            return RetryAfterError(
                f"AWS throttled {operation} ({code}): {message}", delay=THROTTLE_DELAY
            )
        if code == INSTANCE_NOT_FOUND_CODE:
            return InstanceNotFoundError(f"{operation}: {code}: {message}")
        return AWSError(f"AWS {operation} failed: {code}: {message}", code=code)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return CloudProviderError(f"AWS {operation} failed: {exc}")
    return CloudProviderError(f"AWS {operation} failed: {type(exc).__name__}: {exc}")


def resolve_region(config: AWSConfig, *, env: dict[str, str] | None = None) -> str:
    """The region of every client (blocking: may ask IMDS). Raise ConfigError when unknown."""
    if config.zone:
        return az_to_region(config.zone)
    if config.region:
        return config.region
    environ = dict(os.environ if env is None else env)
    if environ.get("AWS_REGION"):
        return environ["AWS_REGION"]
    session = botocore.session.Session()
    region = session.get_config_variable("region")
    if region:
        return str(region)
    fetcher = botocore.utils.InstanceMetadataRegionFetcher(
        timeout=1,
        num_attempts=1,
        env=environ,
        config={
            "ec2_metadata_service_endpoint": session.get_config_variable(
                "ec2_metadata_service_endpoint"
            ),
            "ec2_metadata_service_endpoint_mode": session.get_config_variable(
                "ec2_metadata_service_endpoint_mode"
            ),
        },
    )
    try:
        region = fetcher.retrieve_region()
    except Exception as exc:  # IMDS unreachable: report it in the one-line error below
        _log.debug("region from instance metadata failed: %s", exc)
        region = None
    if region:
        return str(region)
    raise ConfigError(
        "cloud config: [Global] Region: no region (not in [Global] Zone or Region, "
        "AWS_REGION, AWS_DEFAULT_REGION, nor the instance metadata service)"
    )


def source_headers(role_arn: str, source_arn: str) -> dict[str, str]:
    """Upstream's confused-deputy headers on AssumeRole: the role's account as
    ``x-amz-source-account``, and ``[Global] SourceARN`` as ``x-amz-source-arn`` when set."""
    parts = role_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn":
        raise ConfigError(f"cloud config: [Global] RoleARN: not an ARN: {role_arn!r}")
    headers = {"x-amz-source-account": parts[4]}
    if source_arn:
        headers["x-amz-source-arn"] = source_arn
    return headers


class _ActionLog:
    """Appends ``service:Action`` lines to the file named by :data:`ACTION_LOG_ENV`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, model: Any, **_: Any) -> None:
        action = f"{model.service_model.signing_name}:{model.name}"
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(action + "\n")


class _FixedProvider(botocore.credentials.CredentialProvider):  # type: ignore[misc]
    """A credential provider answering with the assumed role's refreshing credentials."""

    METHOD = "ccm-assume-role"
    CANONICAL_NAME = "ccm-assume-role"

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._credentials


class AWSApi:
    """The provider's boto3 session and clients; every call runs on the framework's thread pool.

    Clients are created on first use (creating one costs tens of milliseconds), once per service,
    under a lock: boto3 clients are thread-safe, sessions are not.
    """

    def __init__(self, config: AWSConfig, region: str) -> None:
        self.config = config
        self.region = region
        self.session = boto3.Session(region_name=region)
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        log_path = os.environ.get(ACTION_LOG_ENV)
        self._observers: list[Callable[..., None]] = [_ActionLog(log_path)] if log_path else []
        self._botocore_config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=MAX_POOL_CONNECTIONS,
            user_agent_extra="ccm-aws",
        )
        self.policy = retry.RetryPolicy(
            attempts=MAX_ATTEMPTS,
            initial_backoff=0.2,
            max_backoff=2.0,
            throttle_delay=THROTTLE_DELAY,
            classify=classify,
        )
        if config.role_arn:
            self.session = self._assume_role_session()

    def observe(self, handler: Callable[..., None]) -> None:
        """Call ``handler(model=OperationModel, params=...)`` before every API call (botocore's
        ``before-call`` event), on the clients created so far and the ones created later."""
        with self._lock:
            self._observers.append(handler)
            for client in self._clients.values():
                client.meta.events.register("before-call", handler)

    def client_args(self, service: str) -> dict[str, Any]:
        args: dict[str, Any] = {"region_name": self.region, "config": self._botocore_config}
        override = self.config.override_for(service, self.region)
        if override is not None:
            args["endpoint_url"] = override.url
            args["region_name"] = override.signing_region
        return args

    def _assume_role_session(self) -> boto3.Session:
        """A session whose credentials come from STS AssumeRole with the base chain's."""
        base = botocore.session.Session()
        base.set_config_variable("region", self.region)
        source = base.get_credentials()
        if source is None:
            raise ConfigError(
                "cloud config: [Global] RoleARN: no base AWS credentials to assume the role with"
            )
        extra: dict[str, Any] = {"RoleSessionName": "ccm-aws"}
        headers = source_headers(self.config.role_arn, self.config.source_arn)

        def add_headers(request: Any, **_: Any) -> None:
            for key, value in headers.items():
                request.headers[key] = value

        sts_args = self.client_args("sts")

        def create_client(service: str, **kwargs: Any) -> Any:
            kwargs.update(sts_args)
            client = base.create_client(service, **kwargs)
            client.meta.events.register("before-sign.sts.AssumeRole", add_headers)
            for handler in self._observers:
                client.meta.events.register("before-call", handler)
            return client

        fetcher = botocore.credentials.AssumeRoleCredentialFetcher(
            client_creator=create_client,
            source_credentials=source,
            role_arn=self.config.role_arn,
            extra_args=extra,
        )
        credentials = botocore.credentials.DeferredRefreshableCredentials(
            method="assume-role", refresh_using=fetcher.fetch_credentials
        )
        assumed = botocore.session.Session()
        resolver = assumed.get_component("credential_provider")
        resolver.insert_before("env", _FixedProvider(credentials))
        return boto3.Session(botocore_session=assumed, region_name=self.region)

    def client(self, service: str) -> Any:
        """The boto3 client of ``service`` (``ec2``, ``elb``), created on first use."""
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self.session.client(service, **self.client_args(service))
                for handler in self._observers:
                    client.meta.events.register("before-call", handler)
                self._clients[service] = client
            return client

    async def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """One API call, e.g. ``await api.call("ec2", "describe_instances", InstanceIds=[...])``."""
        method = functools.partial(self._call_sync, service, operation, params)
        return await self._retrying(operation, method)

    async def paginate(
        self, service: str, operation: str, key: str, *, page_size: int | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        """Every page of a paginated call; returns the concatenation of each page's ``key``
        (``Reservations`` of DescribeInstances...). The pages are read in one thread (a retry
        reads them again from the first); ``page_size`` asks for pages of that many items."""
        if page_size is not None:
            params["PaginationConfig"] = {"PageSize": page_size}
        method = functools.partial(self._paginate_sync, service, operation, key, params)
        return await self._retrying(operation, method)

    async def _retrying(self, operation: str, fn: Callable[[], T]) -> T:
        name = _pretty(operation)
        try:
            return await self.policy.call_blocking(name, fn)
        except CCMError:
            raise  # RetryAfterError, RetriesExhaustedError: already ccm's
        except Exception as exc:
            raise translate_error(exc, name) from exc

    def _call_sync(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = getattr(self.client(service), operation)(**params)
        return result

    def _paginate_sync(
        self, service: str, operation: str, key: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        paginator = self.client(service).get_paginator(operation)
        out: list[dict[str, Any]] = []
        for page in paginator.paginate(**params):
            out.extend(page.get(key) or ())
        return out

    def close(self) -> None:
        """Close the clients' connection pools."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()


@functools.cache
def _pretty(operation: str) -> str:
    """``describe_instances`` → ``DescribeInstances`` (the API's name, as in AWS's errors)."""
    return "".join(part.capitalize() for part in operation.split("_"))


def iter_instances(reservations: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The instances of DescribeInstances' reservations."""
    for reservation in reservations:
        yield from reservation.get("Instances") or ()
