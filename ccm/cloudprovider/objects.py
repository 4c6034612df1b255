"""Read-only views of the Kubernetes objects handed to providers.

Upstream hands providers pointers into the informer cache and asks them, in a comment, not to mutate
them. ccm hands them deep-frozen copies instead: a provider cannot corrupt the controllers' cache
even by mistake. ``raw`` is the frozen object (mappings are ``MappingProxyType``, lists are
tuples); ``to_dict()`` returns a fresh mutable deep copy for a provider that needs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ccm.cloudprovider.types import NodeAddress

__all__ = ["Node", "Service", "freeze", "thaw"]


#: Values that are immutable as they are (most of a JSON object's leaves): checked by exact type
#: before anything else, so a leaf costs no call and no ``isinstance`` against an ABC.
_ATOMS = frozenset({str, int, float, bool, type(None)})


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-shaped data: dict → MappingProxyType, list → tuple."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict or isinstance(value, Mapping):
        return MappingProxyType(
            {k: v if type(v) in _ATOMS else freeze(v) for k, v in value.items()}
        )
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        return tuple([v if type(v) in _ATOMS else freeze(v) for v in value])
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: a mutable deep copy."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


class _View:
    __slots__ = ("_raw",)

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self._raw: Mapping[str, Any] = freeze(obj)

    @property
    def raw(self) -> Mapping[str, Any]:
        return self._raw

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = thaw(self._raw)
        return result

    @property
    def metadata(self) -> Mapping[str, Any]:
        md: Mapping[str, Any] = self._raw.get("metadata", MappingProxyType({}))
        return md

    @property
    def spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self._raw.get("spec", MappingProxyType({}))
        return spec

    @property
    def status(self) -> Mapping[str, Any]:
        status: Mapping[str, Any] = self._raw.get("status", MappingProxyType({}))
        return status

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def labels(self) -> Mapping[str, str]:
        labels: Mapping[str, str] = self.metadata.get("labels") or MappingProxyType({})
        return labels

    @property
    def annotations(self) -> Mapping[str, str]:
        ann: Mapping[str, str] = self.metadata.get("annotations") or MappingProxyType({})
        return ann

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.uid, self.name))


class Node(_View):
    """A read-only Node."""

    __slots__ = ()

    @property
    def provider_id(self) -> str:
        return str(self.spec.get("providerID", "") or "")

    @property
    def addresses(self) -> tuple[NodeAddress, ...]:
        return tuple(NodeAddress.from_dict(a) for a in self.status.get("addresses", ()) or ())

    @property
    def taints(self) -> tuple[Mapping[str, Any], ...]:
        taints: tuple[Mapping[str, Any], ...] = tuple(self.spec.get("taints", ()) or ())
        return taints

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        cidrs = self.spec.get("podCIDRs") or ()
        if not cidrs and self.spec.get("podCIDR"):
            cidrs = (self.spec["podCIDR"],)
        return tuple(str(c) for c in cidrs)


class Service(_View):
    """A read-only Service."""

    __slots__ = ()

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def type(self) -> str:
        return str(self.spec.get("type", "ClusterIP"))

    @property
    def ports(self) -> tuple[Mapping[str, Any], ...]:
        ports: tuple[Mapping[str, Any], ...] = tuple(self.spec.get("ports", ()) or ())
        return ports

    @property
    def load_balancer_class(self) -> str | None:
        cls = self.spec.get("loadBalancerClass")
        return None if cls is None else str(cls)
