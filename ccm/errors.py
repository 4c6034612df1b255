"""One exception tree for ccm: what providers raise, what the Kubernetes edge raises, what the CLI
reports. Part of the provider contract and toolkit (with :mod:`ccm.cloudprovider`): audience,
provider authors first.

Ports the sentinel errors of upstream ``cloud.go`` (``InstanceNotFound``, ``NotImplemented``,
``ImplementedElsewhere``, ``DiskNotFound``) and ``api.RetryError`` as exception classes, and adds
the Kubernetes API errors that ``ccm.kube`` translates at its boundary.

::

    CCMError
    ├── ConfigError                      bad flags, unreadable or malformed files (CLI: exit 1)
    │   ├── UnknownProviderError         --cloud-provider names no installed provider
    │   └── ConfigFileError              a provider's --cloud-config: names the file and the field
    ├── CloudProviderError               anything a provider raises about the cloud
    │   ├── InstanceNotFoundError        "instance not found"
    │   ├── NotImplementedByProviderError  "unimplemented"
    │   ├── ImplementedElsewhereError    "implemented by alternate to cloud provider"
    │   ├── DiskNotFoundError            "disk is not found"
    │   ├── RetryAfterError              ask for a requeue after exactly ``delay`` seconds
    │   └── RetriesExhaustedError        transient failures outlasted the retry policy
    ├── CloudCallTimeoutError            a cloud call ran longer than --cloud-call-timeout
    └── KubeError                        the Kubernetes API said no, or could not be reached
        └── ApiError                     an HTTP status from the apiserver
            ├── BadRequestError (400)    UnauthorizedError (401)   ForbiddenError (403)
            ├── NotFoundError (404)      ConflictError (409)       AlreadyExistsError (409)
            ├── GoneError (410)          InvalidError (422)        TooManyRequestsError (429)
            └── ServerError (5xx)

One name per concept: a provider raises :class:`InstanceNotFoundError` for a machine the cloud
does not have; :class:`NotFoundError` is the apiserver's 404 for a Kubernetes object, raised by
``ccm.kube`` and never by a provider. ``NotImplemented`` is a Python builtin, so the contract's
"unimplemented" error is :class:`NotImplementedByProviderError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExistsError",
    "ApiError",
    "BadRequestError",
    "CCMError",
    "CloudCallTimeoutError",
    "CloudProviderError",
    "ConfigError",
    "ConfigFileError",
    "ConflictError",
    "DiskNotFoundError",
    "ForbiddenError",
    "GoneError",
    "ImplementedElsewhereError",
    "InstanceNotFoundError",
    "InvalidError",
    "KubeError",
    "NotFoundError",
    "NotImplementedByProviderError",
    "RetriesExhaustedError",
    "RetryAfterError",
    "ServerError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnknownProviderError",
    "api_error_for_status",
    "find_retry_after",
]


class CCMError(Exception):
    """Root of every error ccm raises on purpose."""


class ConfigError(CCMError):
    """Invalid configuration: a flag, a file, a kubeconfig. The CLI prints it as one line and
    exits 1."""


class UnknownProviderError(ConfigError):
    """``--cloud-provider`` names a provider that is neither registered nor installed."""

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = sorted(installed)
        listed = ", ".join(self.installed) or "none"
        super().__init__(f'unknown cloud provider "{name}" (installed providers: {listed})')


class ConfigFileError(ConfigError):
    """A configuration file is malformed or holds a bad value: one line naming the file
    (``source``), the field (``field``, dotted, e.g. ``retries.attempts``) or the ``line``, and
    what is wrong (``reason``)."""

    def __init__(
        self, source: str, reason: str, *, field: str = "", line: int | None = None
    ) -> None:
        self.source = source
        self.reason = reason
        self.field = field
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


class CloudProviderError(CCMError):
    """Something a cloud provider reports. Providers translate SDK errors into this tree."""

    default_message = "cloud provider error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.default_message)


class InstanceNotFoundError(CloudProviderError):
    """The instance does not exist (never raised for a stopped instance)."""

    default_message = "instance not found"


class NotImplementedByProviderError(CloudProviderError):
    """The provider does not implement this method."""

    default_message = "unimplemented"


class ImplementedElsewhereError(CloudProviderError):
    """Another controller owns this object; the framework treats the call as a success."""

    default_message = "implemented by alternate to cloud provider"


class DiskNotFoundError(CloudProviderError):
    """The disk is not found (kept for parity with upstream; no ccm controller uses it)."""

    default_message = "disk is not found"


class RetryAfterError(CloudProviderError):
    """Ask the controller to retry after exactly ``delay`` seconds instead of exponential
    backoff."""

    def __init__(self, message: str, delay: float) -> None:
        if delay < 0:
            raise ValueError("RetryAfterError delay must be >= 0")
        super().__init__(message)
        self.delay = float(delay)


class RetriesExhaustedError(CloudProviderError):
    """A cloud call kept failing transiently (5xx, connection reset, timeout) until its retry
    policy gave up (``ccm.cloudprovider.retry``). ``call`` names the call, ``attempts`` counts the
    tries; the last failure is the ``__cause__``."""

    def __init__(self, call: str, attempts: int, last: BaseException) -> None:
        self.call = call
        self.attempts = attempts
        detail = str(last) or type(last).__name__
        super().__init__(f"{call}: gave up after {attempts} attempts: {detail}")


class CloudCallTimeoutError(CCMError):
    """A cloud provider call did not return within ``--cloud-call-timeout``.

    Deliberately not a :class:`CloudProviderError`: the provider never answered, so nothing is
    known about the cloud. Callers that fall back to another call on a provider error (the
    Instances by-ID/by-name fallbacks) do not fall back on a timeout, and the node lifecycle
    controller treats it as doubt (never deletes). ``call`` names the call, ``timeout`` is the
    bound in seconds.
    """

    def __init__(self, call: str, timeout: float) -> None:
        self.call = call
        self.timeout = timeout
        super().__init__(f"cloud provider call {call} did not return within {timeout:g}s")


def find_retry_after(exc: BaseException) -> RetryAfterError | None:
    """Return the RetryAfterError in ``exc``'s cause/context chain, if any (upstream
    ``errors.As``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, RetryAfterError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class KubeError(CCMError):
    """The Kubernetes API could not be reached or refused a request."""


class ApiError(KubeError):
    """An HTTP error status from the apiserver, with its ``Status`` reason and message."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status_code = status
        self.reason = reason
        self.body = body or {}

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadRequestError(ApiError):
    status_code = 400


class UnauthorizedError(ApiError):
    status_code = 401


class ForbiddenError(ApiError):
    status_code = 403


class NotFoundError(ApiError):
    status_code = 404


class ConflictError(ApiError):
    status_code = 409


class AlreadyExistsError(ConflictError):
    """409 with reason ``AlreadyExists``."""


class GoneError(ApiError):
    """410: the resourceVersion is too old; relist."""

    status_code = 410


class InvalidError(ApiError):
    status_code = 422


class TooManyRequestsError(ApiError):
    status_code = 429


class ServerError(ApiError):
    status_code = 500


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
    429: TooManyRequestsError,
}


def api_error_for_status(status: int, body: dict[str, Any] | None = None) -> ApiError:
    """Build the ApiError subclass for an HTTP status and a decoded ``Status`` body."""
    body = body or {}
    reason = str(body.get("reason", ""))
    message = str(body.get("message", "")) or f"apiserver returned HTTP {status}"
    cls: type[ApiError]
    if status == 409 and reason == "AlreadyExists":
        cls = AlreadyExistsError
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(message, status=status, reason=reason, body=body)
