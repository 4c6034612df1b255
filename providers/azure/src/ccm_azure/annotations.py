"""The ``service.beta.kubernetes.io/azure-*`` annotations a Service's load balancer follows, with
upstream's (cloud-provider-azure) names and parsing.

:func:`parse` reads a Service into :class:`ServiceOptions` before any cloud call; an annotation
this provider does not know, or a value it cannot parse, raises
:class:`ccm.errors.CloudProviderError` naming the annotation: the service controller turns it into
a Warning event on the Service and nothing in the cloud changes. Case rules as upstream: the
boolean ``internal`` is ``true`` in any case (any other value is "public", as upstream reads it);
the health-probe protocol is matched without case and trimmed; values are otherwise taken as
written (the resource group and subnet trimmed, as upstream trims them).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ccm import errors
from ccm.cloudprovider import Service

__all__ = [
    "ALLOWED_SERVICE_TAGS",
    "DNS_LABEL_NAME",
    "HEALTH_PROBE_PROTOCOL",
    "HEALTH_PROBE_REQUEST_PATH",
    "INTERNAL",
    "INTERNAL_SUBNET",
    "LOAD_BALANCER_RESOURCE_GROUP",
    "PIP_NAME",
    "SUPPORTED",
    "TCP_IDLE_TIMEOUT",
    "ServiceOptions",
    "is_internal",
    "parse",
]

_PREFIX = "service.beta.kubernetes.io/azure-"
INTERNAL = _PREFIX + "load-balancer-internal"
INTERNAL_SUBNET = _PREFIX + "load-balancer-internal-subnet"
PIP_NAME = _PREFIX + "pip-name"
DNS_LABEL_NAME = _PREFIX + "dns-label-name"
LOAD_BALANCER_RESOURCE_GROUP = _PREFIX + "load-balancer-resource-group"
HEALTH_PROBE_PROTOCOL = _PREFIX + "load-balancer-health-probe-protocol"
HEALTH_PROBE_REQUEST_PATH = _PREFIX + "load-balancer-health-probe-request-path"
TCP_IDLE_TIMEOUT = _PREFIX + "load-balancer-tcp-idle-timeout"
ALLOWED_SERVICE_TAGS = _PREFIX + "allowed-service-tags"

#: Every ``azure-*`` annotation this provider reads; any other one is refused.
SUPPORTED = frozenset(
    {
        INTERNAL,
        INTERNAL_SUBNET,
        PIP_NAME,
        DNS_LABEL_NAME,
        LOAD_BALANCER_RESOURCE_GROUP,
        HEALTH_PROBE_PROTOCOL,
        HEALTH_PROBE_REQUEST_PATH,
        TCP_IDLE_TIMEOUT,
        ALLOWED_SERVICE_TAGS,
    }
)

#: Upstream's bounds of the TCP idle timeout, in minutes, and its default.
IDLE_TIMEOUT_MIN = 4
IDLE_TIMEOUT_MAX = 100
#: Upstream's default request path of an HTTP(S) health probe.
DEFAULT_REQUEST_PATH = "/"
# ARM's rule for a public IP's domain name label.
_DNS_LABEL = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
_PROBE_PROTOCOLS = {"tcp": "Tcp", "http": "Http", "https": "Https"}


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """What the annotations and ``loadBalancerSourceRanges`` of one Service ask for."""

    internal: bool = False
    internal_subnet: str | None = None
    pip_name: str | None = None
    dns_label_name: str | None = None
    pip_resource_group: str | None = None
    probe_protocol: str | None = None
    probe_request_path: str | None = None
    idle_timeout: int = IDLE_TIMEOUT_MIN
    allowed_service_tags: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()

    def probe_for(self, app_protocol: str | None) -> tuple[str, str | None]:
        """(probe protocol, request path) of a TCP port: the port's ``appProtocol`` first, then
        the annotation, then TCP; an unknown protocol is TCP (as upstream); a path only for
        HTTP(S), ``/`` unless annotated."""
        asked = app_protocol if app_protocol is not None else self.probe_protocol
        protocol = _PROBE_PROTOCOLS.get((asked or "tcp").strip().lower(), "Tcp")
        if protocol == "Tcp":
            return protocol, None
        return protocol, self.probe_request_path or DEFAULT_REQUEST_PATH


def is_internal(service: Service) -> bool:
    """Upstream's test: the annotation is ``true`` in any case."""
    return service.annotations.get(INTERNAL, "").lower() == "true"


def _bad(key: str, value: str, why: str) -> errors.CloudProviderError:
    return errors.CloudProviderError(f"annotation {key}: invalid value {value!r}: {why}")


def _idle_timeout(value: str) -> int:
    text = value.strip()
    try:
        minutes = int(text, 10)
    except ValueError:
        raise _bad(TCP_IDLE_TIMEOUT, value, f"{text} value must be a whole number") from None
    if not IDLE_TIMEOUT_MIN <= minutes <= IDLE_TIMEOUT_MAX:
        raise _bad(
            TCP_IDLE_TIMEOUT,
            value,
            "idle timeout value must be a whole number representing minutes between "
            f"{IDLE_TIMEOUT_MIN} and {IDLE_TIMEOUT_MAX}",
        )
    return minutes


def _source_ranges(service: Service) -> tuple[str, ...]:
    out: list[str] = []
    for raw in service.spec.get("loadBalancerSourceRanges") or ():
        text = str(raw).strip()
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise errors.CloudProviderError(
                f"spec.loadBalancerSourceRanges: {text!r} is not a CIDR"
            ) from None
    return tuple(out)


def parse(service: Service) -> ServiceOptions:
    """The Service's options; an unknown ``azure-*`` annotation or a malformed value raises
    ``CloudProviderError`` naming it (before any cloud call)."""
    ann = service.annotations
    unknown = sorted(k for k in ann if k.startswith(_PREFIX) and k not in SUPPORTED)
    if unknown:
        raise errors.CloudProviderError(
            f"annotation {unknown[0]} is not supported by the azure provider"
        )
    internal = is_internal(service)
    subnet = ann.get(INTERNAL_SUBNET, "").strip() if internal else ""
    dns = ann.get(DNS_LABEL_NAME)
    if dns and not _DNS_LABEL.match(dns):
        raise _bad(
            DNS_LABEL_NAME,
            dns,
            "3 to 63 lower-case letters, digits and dashes, starting with a letter",
        )
    protocol = ann.get(HEALTH_PROBE_PROTOCOL)
    path = ann.get(HEALTH_PROBE_REQUEST_PATH)
    if path is not None and not path.startswith("/"):
        raise _bad(HEALTH_PROBE_REQUEST_PATH, path, "must start with /")
    tags = tuple(t.strip() for t in ann.get(ALLOWED_SERVICE_TAGS, "").split(",") if t.strip())
    timeout = ann.get(TCP_IDLE_TIMEOUT)
    return ServiceOptions(
        internal=internal,
        internal_subnet=subnet or None,
        pip_name=ann.get(PIP_NAME) or None,
        dns_label_name=dns or None,
        pip_resource_group=ann.get(LOAD_BALANCER_RESOURCE_GROUP, "").strip() or None,
        probe_protocol=protocol,
        probe_request_path=path,
        idle_timeout=IDLE_TIMEOUT_MIN if timeout is None else _idle_timeout(timeout),
        allowed_service_tags=tags,
        source_ranges=_source_ranges(service),
    )


def lenient(service: Service) -> ServiceOptions:
    """The options that name the Service's resources, for deleting them: never refuses (a Service
    whose annotations went bad must still be cleaned up)."""
    ann = service.annotations
    internal = is_internal(service)
    subnet = ann.get(INTERNAL_SUBNET, "").strip() if internal else ""
    return ServiceOptions(
        internal=internal,
        internal_subnet=subnet or None,
        pip_name=ann.get(PIP_NAME) or None,
        pip_resource_group=ann.get(LOAD_BALANCER_RESOURCE_GROUP, "").strip() or None,
    )
