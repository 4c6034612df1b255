"""The parts one Service owns on the shared load balancer, named and built as upstream does.

- Frontend IP configuration ``a<uid without dashes>`` (32 characters at most); with
  ``azure-load-balancer-internal-subnet``, ``<that>-<subnet>`` cut to 75 characters (a cut ending
  in a character other than a letter or ``_`` ends in ``_``).
- Per port a rule ``a<uid>-<protocol>-<port>`` (``a<uid>-<subnet>-<protocol>-<port>`` with the
  subnet annotation, the subnet cut so the name stays within 75 characters), floating IP on,
  backend port = port, the idle timeout of ``azure-load-balancer-tcp-idle-timeout`` (4), TCP
  reset on for TCP; per TCP port a probe of the same name on the Node port (TCP, or HTTP(S) on
  the request path, see :meth:`ccm_azure.annotations.ServiceOptions.probe_for`), every 5 s, 2
  probes; UDP and SCTP ports have no probe (as upstream).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from azure.mgmt.network import models as network

from ccm import errors
from ccm.cloudprovider import Service, default_load_balancer_name
from ccm_azure.annotations import ServiceOptions

__all__ = ["Ids", "apply", "frontend_name", "owns", "remove", "rule_name"]

#: Upstream's longest frontend and rule names, less the IP family suffix (``-IPv4``).
MAX_NAME = 80 - 5
_TRANSPORT = {"TCP": "Tcp", "UDP": "Udp", "SCTP": "All"}
PROBE_INTERVAL = 5
PROBE_COUNT = 2


def frontend_name(service: Service, options: ServiceOptions) -> str:
    base = default_load_balancer_name(service)
    if options.internal_subnet is None:
        return base
    name = f"{base}-{options.internal_subnet}"
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME]
        last = name[-1]
        if not unicodedata.category(last).startswith("L") and last != "_":
            name = name[:-1] + "_"
    return name


def rule_name(service: Service, options: ServiceOptions, protocol: str, port: int) -> str:
    prefix = default_load_balancer_name(service)
    name = f"{prefix}-{protocol}-{port}"
    subnet = options.internal_subnet
    if subnet is None:
        return name
    if len(name) + len(subnet) + 1 > MAX_NAME:
        subnet = subnet[: MAX_NAME - len(name) - 1]
    return f"{prefix}-{subnet}-{protocol}-{port}"


def owns(service: Service, name: str) -> bool:
    """Whether a frontend, rule or probe named ``name`` is the Service's."""
    base = default_load_balancer_name(service)
    return name == base or name.startswith(base + "-")


@dataclass(frozen=True, slots=True)
class Ids:
    """ARM IDs in the cluster's subscription."""

    subscription: str
    group: str

    def of(self, kind: str, name: str, child: str = "", group: str | None = None) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{group or self.group}"
            f"/providers/Microsoft.Network/{kind}/{name}{child}"
        )


def remove(lb: Any, service: Service) -> bool:
    """Take the Service's frontend, rules and probes off ``lb``; whether it had a frontend."""
    frontends = list(lb.frontend_ip_configurations or ())
    lb.frontend_ip_configurations = [f for f in frontends if not owns(service, str(f.name))]
    lb.load_balancing_rules = [
        r for r in lb.load_balancing_rules or () if not owns(service, str(r.name))
    ]
    lb.probes = [p for p in lb.probes or () if not owns(service, str(p.name))]
    return len(lb.frontend_ip_configurations) != len(frontends)


def apply(
    lb: Any,
    *,
    ids: Ids,
    lb_name: str,
    pool: str,
    service: Service,
    options: ServiceOptions,
    frontend: Any,
) -> None:
    """Set the Service's frontend (``frontend``, named :func:`frontend_name`), rules and probes
    on ``lb``, replacing the ones it had."""
    remove(lb, service)
    fip_id = ids.of("loadBalancers", lb_name, f"/frontendIPConfigurations/{frontend.name}")
    pool_id = ids.of("loadBalancers", lb_name, f"/backendAddressPools/{pool}")
    rules = list(lb.load_balancing_rules or ())
    probes = list(lb.probes or ())
    for port in service.ports:
        protocol = str(port.get("protocol") or "TCP")
        if protocol not in _TRANSPORT:
            raise errors.CloudProviderError(f"unsupported protocol {protocol}")
        name = rule_name(service, options, protocol, int(port["port"]))
        probe_ref = None
        if protocol == "TCP":
            probe_protocol, path = options.probe_for(port.get("appProtocol"))
            probes.append(
                network.Probe(
                    name=name,
                    protocol=probe_protocol,
                    port=int(port.get("nodePort") or port["port"]),
                    request_path=path,
                    interval_in_seconds=PROBE_INTERVAL,
                    number_of_probes=PROBE_COUNT,
                )
            )
            probe_ref = network.SubResource(id=ids.of("loadBalancers", lb_name, f"/probes/{name}"))
        rules.append(
            network.LoadBalancingRule(
                name=name,
                protocol=_TRANSPORT[protocol],
                frontend_port=int(port["port"]),
                backend_port=int(port["port"]),
                frontend_ip_configuration=network.SubResource(id=fip_id),
                backend_address_pool=network.SubResource(id=pool_id),
                probe=probe_ref,
                enable_floating_ip=True,
                idle_timeout_in_minutes=options.idle_timeout,
                enable_tcp_reset=True if protocol == "TCP" else None,
                load_distribution=(
                    "SourceIP" if service.spec.get("sessionAffinity") == "ClientIP" else "Default"
                ),
                disable_outbound_snat=False,
            )
        )
    lb.frontend_ip_configurations = [*(lb.frontend_ip_configurations or ()), frontend]
    lb.load_balancing_rules = rules
    lb.probes = probes
