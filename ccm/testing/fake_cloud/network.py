"""The fake cloud's network capabilities: LoadBalancer and Routes."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

from ccm.cloudprovider import LoadBalancerStatus, Node, Route, Service, default_load_balancer_name
from ccm.errors import CloudProviderError
from ccm.testing.fake_cloud.instances import FakeCloudInstances
from ccm.testing.fake_cloud.methods import REJECT_ANNOTATION, _check_cidr, _digest, _network
from ccm.testing.fake_cloud.model import FakeLoadBalancer, FakePort


class FakeCloudNetwork(FakeCloudInstances):
    """LoadBalancer and Routes of :class:`FakeCloud`."""

    # ---- LoadBalancer

    def get_load_balancer_name(self, cluster_name: str, service: Service) -> str:
        if not service.uid:
            return f"a-{service.namespace}-{service.name}"
        return default_load_balancer_name(service)

    def _lb_identifiers(self, cluster_name: str, service: Service) -> tuple[str, ...]:
        return (service.uid, self.get_load_balancer_name(cluster_name, service))

    async def get_load_balancer(
        self, cluster_name: str, service: Service
    ) -> LoadBalancerStatus | None:
        await self._call("get", service.key, *self._lb_identifiers(cluster_name, service))
        lb = self.load_balancers.get(self.get_load_balancer_name(cluster_name, service))
        if lb is None:
            return None
        return self._lb_status(lb)

    async def ensure_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> LoadBalancerStatus:
        await self._call("create", service.key, *self._lb_identifiers(cluster_name, service))
        ports = self._check_service(service)
        name = self.get_load_balancer_name(cluster_name, service)
        lb = self.load_balancers.get(name)
        ip = self._choose_ip(service, name, lb)
        if lb is None:
            lb = FakeLoadBalancer(name=name, service=service.key)
            self.load_balancers[name] = lb
        if lb.ip and lb.ip != ip:
            self._lb_ips.pop(lb.ip, None)
        lb.service = service.key
        lb.service_uid = service.uid
        lb.cluster_name = cluster_name
        lb.ports = ports
        lb.nodes = tuple(sorted({n.name for n in nodes}))
        lb.ip = ip
        lb.ensure_count += 1
        self._lb_ips[ip] = name
        self._status_changed()
        return self._lb_status(lb)

    async def update_load_balancer(
        self, cluster_name: str, service: Service, nodes: Sequence[Node]
    ) -> None:
        await self._call("update", service.key, *self._lb_identifiers(cluster_name, service))
        name = self.get_load_balancer_name(cluster_name, service)
        lb = self.load_balancers.get(name)
        if lb is None:
            raise CloudProviderError(
                f"load balancer {name} for service {service.key} does not exist"
            )
        lb.nodes = tuple(sorted({n.name for n in nodes}))
        lb.update_count += 1
        self._status_changed()

    async def ensure_load_balancer_deleted(self, cluster_name: str, service: Service) -> None:
        await self._call("delete", service.key, *self._lb_identifiers(cluster_name, service))
        lb = self.load_balancers.pop(self.get_load_balancer_name(cluster_name, service), None)
        if lb is not None:
            if self._lb_ips.get(lb.ip) == lb.name:
                del self._lb_ips[lb.ip]
            self._status_changed()

    def _check_service(self, service: Service) -> tuple[FakePort, ...]:
        """Reject what the fake cloud cannot build; return the Service's ports."""
        if REJECT_ANNOTATION in service.annotations:
            message = service.annotations[REJECT_ANNOTATION] or "rejected by the fake cloud"
            raise CloudProviderError(message)
        ports = []
        for raw in service.ports:
            port = FakePort(
                name=str(raw.get("name", "") or ""),
                protocol=str(raw.get("protocol", "") or "TCP"),
                port=int(raw.get("port", 0) or 0),
                node_port=int(raw.get("nodePort", 0) or 0),
            )
            if port.protocol.upper() in self.reject_protocols:
                raise CloudProviderError(
                    f"fake cloud load balancers do not support protocol {port.protocol} "
                    f"(service {service.key}, port {port.name or port.port})"
                )
            ports.append(port)
        return tuple(ports)

    def _ip_taken(self, ip: str, name: str) -> bool:
        owner = self._lb_ips.get(ip)
        if owner is None or owner == name:
            return False
        holder = self.load_balancers.get(owner)
        return (
            holder is not None and holder.ip == ip
        )  # stale entries (LB removed by a test) are free

    def _choose_ip(self, service: Service, name: str, lb: FakeLoadBalancer | None) -> str:
        requested = str(service.spec.get("loadBalancerIP", "") or "")
        if requested:
            try:
                requested = str(ipaddress.ip_address(requested))
            except ValueError:
                raise CloudProviderError(
                    f"invalid loadBalancerIP {requested!r} for service {service.key}"
                ) from None
            if self._ip_taken(requested, name):
                raise CloudProviderError(
                    f"loadBalancerIP {requested} of service {service.key} is already in use"
                )
            return requested
        if lb is not None and lb.ip:
            return lb.ip
        net = _network(self.ip_pool)
        first, count = (
            (1, net.num_addresses - 2) if net.num_addresses > 2 else (0, net.num_addresses)
        )
        start = _digest(service.key)
        for step in range(count):
            ip = str(net.network_address + first + (start + step) % count)
            if not self._ip_taken(ip, name):
                return ip
        raise CloudProviderError(
            f"load balancer IP pool {self.ip_pool} is exhausted ({count} addresses); "
            "set loadBalancer.ipPool to a larger CIDR"
        )

    # ---- Routes

    def add_route(self, cluster_name: str, route: Route) -> Route:
        """Put ``route`` as is in ``cluster_name``'s table (named if unnamed) and return it."""
        if not route.name:
            route = dataclasses.replace(
                route,
                name=self._route_name(cluster_name, route.target_node, route.destination_cidr),
            )
        self.route_table.setdefault(cluster_name, {})[route.name] = route
        self._status_changed()
        return route

    def set_route_blackhole(self, cluster_name: str, name: str, blackhole: bool = True) -> None:
        """Mark route ``name`` (or every route targeting node ``name``) as blackhole (or not)."""
        table = self.route_table.get(cluster_name, {})
        matched = [r for r in table.values() if name in (r.name, r.target_node)]
        if not matched:
            raise KeyError(f"no route {name!r} in cluster {cluster_name!r}")
        for route in matched:
            table[route.name] = dataclasses.replace(route, blackhole=blackhole)
        self._status_changed()

    async def list_routes(self, cluster_name: str) -> Sequence[Route]:
        await self._call("list-routes", cluster_name)
        routes = sorted(self.route_table.get(cluster_name, {}).values(), key=lambda r: r.name)
        if self.routes_enable_node_addresses:
            routes = [dataclasses.replace(r, enable_node_addresses=True) for r in routes]
        if self.routes_auto_blackhole:
            routes = [
                r
                if r.blackhole or self._target_exists(r.target_node)
                else dataclasses.replace(r, blackhole=True)
                for r in routes
            ]
        return tuple(routes)

    def _target_exists(self, node_name: str) -> bool:
        instance = self.find_instance(name=node_name)
        return instance is not None and instance.exists

    async def create_route(self, cluster_name: str, name_hint: str, route: Route) -> None:
        await self._call(
            "create-route", route.target_node, cluster_name, name_hint, route.destination_cidr
        )
        try:
            cidr = _check_cidr(route.destination_cidr)
        except ValueError as exc:
            raise CloudProviderError(f"cannot create route: {exc}") from None
        table = self.route_table.setdefault(cluster_name, {})
        for existing in table.values():
            if existing.destination_cidr == cidr:
                if existing.target_node == route.target_node:
                    return  # already there: idempotent
                raise CloudProviderError(
                    f"route for {cidr} already exists in cluster {cluster_name} "
                    f"and targets node {existing.target_node}"
                )
        name = self._route_name(cluster_name, name_hint or route.target_node, cidr)
        table[name] = Route(
            name=name,
            target_node=route.target_node,
            destination_cidr=cidr,
            target_node_addresses=tuple(route.target_node_addresses),
        )
        self._status_changed()

    async def delete_route(self, cluster_name: str, route: Route) -> None:
        await self._call(
            "delete-route", route.target_node, cluster_name, route.name, route.destination_cidr
        )
        table = self.route_table.get(cluster_name, {})
        name = route.name if route.name in table else None
        if name is None:
            name = next(
                (
                    r.name
                    for r in table.values()
                    if r.target_node == route.target_node
                    and r.destination_cidr == route.destination_cidr
                ),
                None,
            )
        if name is not None:
            del table[name]
            self._status_changed()
