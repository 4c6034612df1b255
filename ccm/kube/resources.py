"""The API resources ccm talks to: where each lives (group/version/plural), its kind and scope."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "CONFIGMAPS",
    "ENDPOINTS",
    "EVENTS",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "SECRETS",
    "SERVICEACCOUNTS",
    "SERVICES",
    "SUBJECTACCESSREVIEWS",
    "TOKENREVIEWS",
    "Resource",
]

# Characters left unescaped in a path segment: everything a Kubernetes name may hold except "/".
_SAFE_SEGMENT = ":@!$&'()*+,;=-._~"


def _seg(value: str) -> str:
    if not value:
        raise ValueError("empty name or namespace in an API path")
    return quote(value, safe=_SAFE_SEGMENT)


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: where it lives (group/version/plural), what it is (kind), its scope."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, else ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path: ``/api/v1/namespaces/ns/services/name/status`` and the like.

        A namespaced resource without ``namespace`` gives the all-namespaces collection; a name on a
        namespaced resource needs a namespace.
        """
        out = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            if not self.namespaced:
                raise ValueError(f"{self.plural} is cluster-scoped; got namespace {namespace!r}")
            out += f"/namespaces/{_seg(namespace)}"
        elif name is not None and self.namespaced:
            raise ValueError(f"{self.plural} is namespaced; {name!r} needs a namespace")
        out += f"/{self.plural}"
        if name is not None:
            out += f"/{_seg(name)}"
        if subresource:
            if name is None:
                raise ValueError("a subresource needs a name")
            out += f"/{subresource}"
        return out


NODES = Resource("", "v1", "nodes", "Node", False)
SERVICES = Resource("", "v1", "services", "Service", True)
EVENTS = Resource("", "v1", "events", "Event", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
TOKENREVIEWS = Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False)
SUBJECTACCESSREVIEWS = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False
)
