"""The conformance driver protocol: how the suite creates, stops, starts and deletes machines.

A provider answers questions about a cloud; it never creates machines. To check that the provider
tells the controllers the truth (a stopped machine still exists, a deleted one does not, a load
balancer is really gone after delete), the suite needs a second, independent handle on the cloud:
the *driver*. A provider author writes one for their cloud (or for the test double of it) and
hands it to the suite (``ccm conformance --driver MODULE:ATTR`` or the pytest plugin).

Rules for a driver
==================
* Every method is ``async``. Calls are bounded by the suite's timeouts; a driver must honour
  cancellation.
* ``create_machine(name)`` creates a *running* machine that the provider will report for a Node
  called ``name``, and returns a :class:`Machine`: what a Node for it needs (``provider_id`` when
  the driver knows it, ``addresses``) plus, optionally, what the suite should expect on the Node
  after initialization (instance type, zone, region, extra labels). ``None`` means "do not check". A
  cloud that names its machines itself (EC2: a Node is named by the instance's private DNS name, as
  its kubelet names itself) returns that name in :attr:`Machine.name`; the suite uses
  ``Machine.name`` for the Node and every later call.
* ``stop_machine`` / ``start_machine`` power the machine off / on; it must still exist while
  stopped. ``delete_machine`` removes it for good (idempotent).
* ``change_addresses(name)`` (optional) changes the machine's addresses in the cloud and returns
  the new ones; raise :class:`NotImplementedError` when the cloud cannot do that (the
  address-refresh scenario is then reported "not offered").
* ``load_balancers()`` / ``routes(cluster_name)`` (optional) return what the cloud *really* holds,
  read without going through the provider, so that a load balancer leaked on delete is caught even
  when the provider's own ``get_load_balancer`` lies. Return ``None`` when the driver cannot
  inspect them (the checks that need it then fall back to the provider's own view, and say so).
* ``max_load_balancer_name_length``: the longest load-balancer name the cloud accepts (default 32).
* ``route_scope`` (optional, default ``"cluster-name"``): how the cloud scopes a cluster's routes.
  ``"cluster-name"``: routes carry their cluster, so routes of cluster A are neither listed nor
  deleted through cluster B (the scenario ``cluster-name-scoping`` checks it). ``"route-table"``:
  the cloud's routes carry no cluster (EC2, Azure), the route table the provider is configured
  with is the cluster's scope and ``cluster_name`` only names routes, as upstream;
  ``cluster-name-scoping`` is then reported "not applicable" with that reason, and every other
  route scenario is still checked in full. Read through :func:`declared_route_scope`.
* ``cleanup()`` removes whatever the driver created; the suite calls it at the end, also on
  failure.

The driver is built by a *factory*: ``--driver MODULE:ATTR`` names either a driver instance or a
callable ``(provider) -> driver`` (sync or async) that receives the provider the suite built, so an
in-process test double can be shared. :class:`ConformanceDriverBase` gives the optional parts
their defaults; subclass it, or implement :class:`ConformanceDriver` directly.

For the fake provider, :class:`ccm.testing.conformance.fake_driver.FakeCloudDriver` is the driver
(in-process :class:`~ccm.testing.fake_cloud.FakeCloud`, or its state/status files when the
provider runs in a daemon). The CLI picks it automatically for ``--cloud-provider fake``.

This module is the stable interface of the suite; names here do not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from ccm import errors
from ccm.cloudprovider import CloudProvider, NodeAddress

__all__ = [
    "DEFAULT_MAX_LOAD_BALANCER_NAME_LENGTH",
    "DEFAULT_ROUTE_SCOPE",
    "ROUTE_SCOPES",
    "CloudLoadBalancer",
    "CloudRoute",
    "ConformanceDriver",
    "ConformanceDriverBase",
    "DriverFactory",
    "Machine",
    "RouteScope",
    "declared_route_scope",
]

#: Upstream's ``DefaultLoadBalancerName`` is cut at 32 characters; most clouds accept at least this.
DEFAULT_MAX_LOAD_BALANCER_NAME_LENGTH = 32

#: How a cloud scopes a cluster's routes: by the cluster name the routes carry, or by the route
#: table the provider is configured with (routes carry no cluster; ``cluster_name`` names them).
RouteScope = Literal["cluster-name", "route-table"]
ROUTE_SCOPES: tuple[RouteScope, ...] = ("cluster-name", "route-table")
DEFAULT_ROUTE_SCOPE: RouteScope = "cluster-name"

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    """A machine the driver created, and what the suite should expect on its Node.

    ``name`` is the Node name. ``provider_id`` (``<provider>://<id>``) is what the Node's
    ``spec.providerID`` must become; empty means "unknown, the provider fills it" (the suite then
    only checks that it is non-empty and has the provider's prefix). ``addresses`` are the
    addresses the Node must carry after initialization (empty: do not check, but the provider must
    report at least one). ``instance_type``, ``zone``, ``region``: the expected label values
    (``None``: do not check). ``labels``: extra labels the provider is expected to add.
    """

    name: str
    provider_id: str = ""
    addresses: tuple[NodeAddress, ...] = ()
    instance_type: str | None = None
    zone: str | None = None
    region: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudLoadBalancer:
    """A load balancer as the cloud holds it (read by the driver, not by the provider).

    ``name`` is the cloud's name for it (compared with ``get_load_balancer_name``); ``service`` is
    the ``namespace/name`` it belongs to when the cloud records that (else ``""``); ``ips`` and
    ``hostnames`` its ingress points; ``nodes`` the backend Node names, or ``None`` when the driver
    cannot tell.
    """

    name: str
    service: str = ""
    ips: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()
    nodes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudRoute:
    """A route as the cloud's route table holds it: owning cluster, target Node, destination."""

    cluster_name: str
    target_node: str
    destination_cidr: str
    name: str = ""


@runtime_checkable
class ConformanceDriver(Protocol):
    """What a provider author supplies so the suite can act on the cloud behind the provider."""

    #: The longest load-balancer name the cloud accepts.
    max_load_balancer_name_length: int

    # Optional, so not a member of the protocol (a driver written before it stays one):
    # ``route_scope: RouteScope``, read through :func:`declared_route_scope`.

    async def create_machine(self, name: str) -> Machine:
        """Create a running machine for a Node called ``name``; return what its Node needs."""
        ...

    async def stop_machine(self, name: str) -> None:
        """Power the machine off. It must keep existing (the provider must say so)."""
        ...

    async def start_machine(self, name: str) -> None:
        """Power a stopped machine on again."""
        ...

    async def delete_machine(self, name: str) -> None:
        """Delete the machine for good. Idempotent."""
        ...

    async def change_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        """Give the machine new addresses and return them; NotImplementedError if impossible."""
        ...

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        """Every load balancer the cloud holds, or ``None`` when the driver cannot inspect them."""
        ...

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        """Routes the cloud holds for ``cluster_name``, or ``None`` when it cannot inspect them."""
        ...

    async def cleanup(self) -> None:
        """Remove every machine (and anything else) the driver created."""
        ...


class ConformanceDriverBase:
    """Defaults for the optional parts of :class:`ConformanceDriver`.

    Subclasses implement ``create_machine``, ``stop_machine``, ``start_machine`` and
    ``delete_machine``; ``cleanup`` deletes every machine created through ``create_machine`` of
    this base (call ``super()`` from overrides: ``self.machines`` tracks them).
    """

    max_load_balancer_name_length: int = DEFAULT_MAX_LOAD_BALANCER_NAME_LENGTH
    #: How the cloud scopes a cluster's routes (the module's rules say what each value means).
    route_scope: RouteScope = DEFAULT_ROUTE_SCOPE

    def __init__(self) -> None:
        self.machines: dict[str, Machine] = {}

    async def create_machine(self, name: str) -> Machine:
        raise NotImplementedError

    async def stop_machine(self, name: str) -> None:
        raise NotImplementedError

    async def start_machine(self, name: str) -> None:
        raise NotImplementedError

    async def delete_machine(self, name: str) -> None:
        raise NotImplementedError

    async def change_addresses(self, name: str) -> tuple[NodeAddress, ...]:
        raise NotImplementedError

    async def load_balancers(self) -> Sequence[CloudLoadBalancer] | None:
        return None

    async def routes(self, cluster_name: str) -> Sequence[CloudRoute] | None:
        return None

    async def cleanup(self) -> None:
        for name in list(self.machines):
            await self.delete_machine(name)
            self.machines.pop(name, None)


#: ``--driver MODULE:ATTR`` names a driver, or a callable building one from the provider.
DriverFactory = Callable[[CloudProvider], "ConformanceDriver | Awaitable[ConformanceDriver]"]


def declared_route_scope(driver: object | None) -> RouteScope:
    """The ``route_scope`` a driver declares (``"cluster-name"`` when it declares none, or there is
    no driver); a value that is not a :data:`RouteScope` is a :class:`~ccm.errors.ConfigError`."""
    scope = getattr(driver, "route_scope", DEFAULT_ROUTE_SCOPE)
    for known in ROUTE_SCOPES:
        if scope == known:
            return known
    raise errors.ConfigError(
        f"conformance driver {describe(driver)}: route_scope {scope!r} is not one of "
        + ", ".join(repr(s) for s in ROUTE_SCOPES)
    )


def describe(driver: Any) -> str:
    """A short name of a driver for reports."""
    return f"{type(driver).__module__}.{type(driver).__qualname__}"
