"""``make demo``: a guided tour of what a cloud controller manager does, on an embedded control
plane with the private-cloud sample provider (``samples/private-cloud``).

1. starts the sample's private cloud (an HTTP API over SQLite on 127.0.0.1: machines, a VIP pool, a
   route table) and a real kube-apiserver + etcd (built from source and cached on first use);
2. registers Nodes the way kubelets started with ``--cloud-provider=external`` do: tainted
   ``node.cloudprovider.kubernetes.io/uninitialized``, no providerID, no topology labels;
3. starts the ``ccm`` daemon with ``--cloud-provider=private-cloud``: the Nodes are initialized
   from the cloud's inventory;
4. gives the Nodes pod CIDRs (kube-controller-manager's job): routes appear in the cloud;
5. creates a ``type: LoadBalancer`` Service: it gets a VIP from the cloud's pool;
6. deletes a machine in the cloud (its kubelet goes silent: NotReady): ccm deletes its Node, its
   route and its load-balancer backend;
7. deletes the Service: the load balancer goes and the VIP returns to the pool;
8. stops everything and exits 0 (``--keep`` leaves it all running and prints how to reach it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon

MACHINES = {
    "worker-a": {"type": "standard-4", "zone": "zone-a", "ip": "10.0.1.11"},
    "worker-b": {"type": "standard-4", "zone": "zone-b", "ip": "10.0.2.12"},
    "worker-c": {"type": "highmem-8", "zone": "zone-c", "ip": "10.0.3.13"},
    "gpu-d": {"type": "gpu-a100", "zone": "zone-a", "ip": "10.0.1.14"},
}
REGION = "region-1"
CLUSTER_CIDR = "10.244.0.0/16"
VIP_POOL = "192.0.2.0/29"  # TEST-NET-1: six VIPs
SERVICE = "demo-web"
DOOMED = "gpu-d"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(n: int, text: str) -> None:
    _say(f"\n[{n}] {text}")


def _check(status: int, body: bytes, what: str) -> Any:
    if status >= 300:
        raise SystemExit(f"demo: {what} failed: HTTP {status}: {body[:300]!r}")
    return json.loads(body) if body else None


def _wait(predicate: Callable[[], Any], what: str, daemon: Daemon, timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    _say(daemon.tail(40))
    raise SystemExit(f"demo: {what}: not within {timeout:.0f}s")


def _table(rows: Sequence[tuple[str, ...]], indent: str = "    ") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


class Cluster:
    """The admin's view of the embedded control plane (standard library HTTP)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def call(self, method: str, path: str, body: Any = None, what: str = "") -> Any:
        return _check(*self.cp.request(method, path, body), what or f"{method} {path}")

    def nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/api/v1/nodes")["items"]
        return sorted(items, key=lambda n: n["metadata"]["name"])

    def node(self, name: str) -> dict[str, Any] | None:
        status, body = self.cp.request("GET", f"/api/v1/nodes/{name}")
        if status == 404:
            return None
        node: dict[str, Any] = _check(status, body, f"get node {name}")
        return node

    def update(self, name: str, change: Callable[[dict[str, Any]], None], status: bool) -> None:
        """GET, change, PUT (the Node or its status), retried on conflicts."""
        path = f"/api/v1/nodes/{name}" + ("/status" if status else "")
        for _ in range(10):
            node = self.call("GET", f"/api/v1/nodes/{name}")
            change(node)
            code, body = self.cp.request("PUT", path, node)
            if code != 409:
                _check(code, body, f"update node {name}")
                return
        raise SystemExit(f"demo: update of node {name} kept conflicting")

    def register_node(self, name: str) -> None:
        """Register a Node with its status in one request, as a kubelet does."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {wellknown.LABEL_HOSTNAME: name}},
            "spec": {
                "taints": [
                    {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}
                ]
            },
            "status": {
                "addresses": [{"type": "Hostname", "address": name}],
                "conditions": [_ready_condition(True)],
            },
        }
        self.call("POST", "/api/v1/nodes", node, f"create node {name}")

    def service(self) -> dict[str, Any] | None:
        status, body = self.cp.request("GET", f"/api/v1/namespaces/default/services/{SERVICE}")
        if status == 404:
            return None
        svc: dict[str, Any] = _check(status, body, "get service")
        return svc

    def events(self, name: str, wait_for: str = "") -> list[dict[str, Any]]:
        """Events about object ``name``; waits (a little) for one with reason ``wait_for``: events
        are recorded asynchronously, after the change they report."""
        deadline = time.monotonic() + 5
        while True:
            items: list[dict[str, Any]] = self.call(
                "GET", f"/api/v1/events?fieldSelector=involvedObject.name={name}"
            )["items"]
            if not wait_for or any(e.get("reason") == wait_for for e in items):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return sorted(items, key=lambda e: str(e.get("firstTimestamp") or ""))


def _ready_condition(ready: bool) -> dict[str, str]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "NodeStatusUnknown",
        "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def _tainted(node: dict[str, Any]) -> bool:
    return any(
        t.get("key") == wellknown.TAINT_UNINITIALIZED for t in node["spec"].get("taints") or []
    )


def _node_table(nodes: list[dict[str, Any]]) -> str:
    rows = [("NODE", "TAINTED", "PROVIDER ID", "TYPE", "ZONE", "REGION", "IP", "POD CIDR")]
    for n in nodes:
        labels = n["metadata"].get("labels") or {}
        addresses = ",".join(
            a["address"]
            for a in (n.get("status") or {}).get("addresses") or []
            if a.get("type") != "Hostname"
        )
        rows.append(
            (
                n["metadata"]["name"],
                "yes" if _tainted(n) else "-",
                n["spec"].get("providerID") or "-",
                labels.get(wellknown.LABEL_INSTANCE_TYPE, "-"),
                labels.get(wellknown.LABEL_ZONE, "-"),
                labels.get(wellknown.LABEL_REGION, "-"),
                addresses or "-",
                ",".join(n["spec"].get("podCIDRs") or []) or "-",
            )
        )
    return _table(rows)


def _route_table(routes: list[dict[str, Any]]) -> str:
    rows = [("CLOUD ROUTE", "DESTINATION", "NEXT HOP (NODE)")]
    rows += [(r["id"], r["cidr"], r["target"]) for r in routes]
    return _table(rows) if routes else "    (route table empty)"


def _vip_table(vips: list[dict[str, Any]], lbs: list[dict[str, Any]]) -> str:
    owner = {lb["name"]: lb["service"] for lb in lbs}
    rows = [("VIP", "ALLOCATED TO")]
    for v in vips:
        lb = v["loadBalancer"]
        rows.append((v["address"], f"{owner.get(lb, '?')} (load balancer {lb})" if lb else "free"))
    return _table(rows)


def run(keep: bool) -> int:
    from private_cloud.testing import AdminClient, ApiProcess, write_cloud_config

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ccm-demo-"))
    _step(1, "Starting the private cloud (sample HTTP API + SQLite) and kube-apiserver + etcd")
    api = ApiProcess(workdir / "cloud.db", vip_pool=VIP_POOL, log_path=workdir / "cloud-api.log")
    api.start()
    cloud: AdminClient = api.admin()
    cp: ControlPlane | None = None
    daemon: Daemon | None = None
    ok = False
    try:
        ids = {}
        for name, m in MACHINES.items():
            created = cloud.create_machine(
                name,
                type=m["type"],
                zone=m["zone"],
                region=REGION,
                addresses=[{"type": "InternalIP", "address": m["ip"]}],
            )
            ids[name] = created["id"]
        _say(f"    private cloud API {api.url}: {len(MACHINES)} machines, VIP pool {VIP_POOL}")
        cp = ControlPlane().start()
        cluster = Cluster(cp)
        _say(f"    kube-apiserver {cp.url} ready in {cp.startup_seconds:.1f}s")

        _step(2, f"{len(MACHINES)} kubelets (--cloud-provider=external) register their Nodes")
        for name in MACHINES:
            cluster.register_node(name)
        _say("    Every Node carries the uninitialized taint: nothing can be scheduled on it.")
        _say(_node_table(cluster.nodes()))

        _step(3, "Starting ccm --cloud-provider=private-cloud")
        config = write_cloud_config(workdir / "cloud-config.yaml", api.url, region=REGION)
        daemon = Daemon(
            [
                "--cloud-provider=private-cloud",
                f"--cloud-config={config}",
                f"--kubeconfig={cp.kubeconfig_path}",
                f"--cluster-cidr={CLUSTER_CIDR}",
                "--node-monitor-period=1s",
                "--route-reconciliation-period=1s",
            ],
            log_dir=workdir,
        )
        t0 = time.monotonic()
        daemon.start()
        _wait(
            lambda: all(
                not _tainted(n) and len((n.get("status") or {}).get("addresses") or []) >= 2
                for n in cluster.nodes()
            ),
            "Nodes initialized",
            daemon,
        )
        _say("    What ccm said at start-up:")
        for line in daemon.log_lines():
            if any(k in line for k in ("optional interface", "Skipping", "Started", "acquired")):
                _say("      " + line.split(" ", 3)[-1])
        _say(
            f"    {time.monotonic() - t0:.1f}s later the cloud node controller had asked the cloud "
            "about each Node:\n    providerID, instance type, zone and region labels and the "
            "machine's addresses are set,\n    and the taint went away in the same write."
        )
        _say(_node_table(cluster.nodes()))

        _step(4, "Pod CIDRs are allocated to the Nodes (kube-controller-manager's job; done here)")
        _say(_route_table(cloud.routes("kubernetes")))
        for i, name in enumerate(MACHINES):
            cidr = f"10.244.{i + 1}.0/24"

            def set_cidr(node: dict[str, Any], cidr: str = cidr) -> None:
                node["spec"]["podCIDR"] = cidr
                node["spec"]["podCIDRs"] = [cidr]

            cluster.update(name, set_cidr, status=False)

        def all_routes() -> list[dict[str, Any]] | None:
            found = cloud.routes("kubernetes")
            return found if len(found) == len(MACHINES) else None

        routes = _wait(all_routes, "routes created", daemon)
        _say("    The route controller created one cloud route per pod CIDR:")
        _say(_route_table(routes))

        _step(5, f"A Service {SERVICE} of type LoadBalancer is created")
        _say(_vip_table(cloud.vips(), cloud.load_balancers()))
        cluster.call(
            "POST",
            "/api/v1/namespaces/default/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": SERVICE},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            },
        )

        def ingress() -> str | None:
            svc = cluster.service() or {}
            found = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            return str(found[0].get("ip")) if found else None

        vip = _wait(ingress, "Service ingress", daemon)
        lb = cloud.load_balancers()[0]
        _say(
            f"    The service controller ensured load balancer {lb['name']} in the cloud\n"
            "    (backends: "
            + ", ".join(f"{n['name']} {n['address']}" for n in lb["nodes"])
            + ")\n    and wrote its VIP to the Service's status:"
        )
        _say(
            _table(
                [("SERVICE", "TYPE", "EXTERNAL-IP", "PORT"), (SERVICE, "LoadBalancer", vip, "80")]
            )
        )
        for ev in cluster.events(SERVICE, wait_for="EnsuredLoadBalancer"):
            _say(f"      {ev.get('type')} {ev.get('reason')}: {ev.get('message')}")
        _say(_vip_table(cloud.vips(), cloud.load_balancers()))

        _step(6, f"Machine {DOOMED} is deleted in the private cloud; its kubelet goes silent")
        cloud.delete_machine(ids[DOOMED])
        cluster.update(
            DOOMED,
            lambda node: node["status"].update(conditions=[_ready_condition(False)]),
            status=True,
        )
        _say(f"    {DOOMED} is NotReady; the node lifecycle controller asks the cloud if it exists")
        t0 = time.monotonic()
        _wait(lambda: cluster.node(DOOMED) is None, f"Node {DOOMED} deleted", daemon)
        _say(f"    {time.monotonic() - t0:.1f}s later the Node is gone. Events:")
        for ev in cluster.events(DOOMED, wait_for="DeletingNode"):
            _say(f"      {ev.get('type')} {ev.get('reason')}: {ev.get('message')}")
        _wait(
            lambda: DOOMED not in {r["target"] for r in cloud.routes("kubernetes")},
            "route removed",
            daemon,
        )
        _wait(
            lambda: DOOMED not in {n["name"] for n in cloud.load_balancers()[0]["nodes"]},
            "backend removed",
            daemon,
        )
        _say("    Its route and its load-balancer backend went with it:")
        _say(_route_table(cloud.routes("kubernetes")))
        _say("    backends: " + ", ".join(n["name"] for n in cloud.load_balancers()[0]["nodes"]))
        _say(_node_table(cluster.nodes()))

        _step(7, f"The Service {SERVICE} is deleted")
        cluster.call("DELETE", f"/api/v1/namespaces/default/services/{SERVICE}")
        _wait(
            lambda: not cloud.load_balancers() and cluster.service() is None, "LB deleted", daemon
        )
        _say(
            "    The service controller deleted the load balancer, then removed its finalizer;\n"
            f"    {vip} is back in the pool:"
        )
        _say(_vip_table(cloud.vips(), cloud.load_balancers()))
        _say(f"\nThe tour took {time.monotonic() - started:.0f}s.")
        if keep:
            _say(f"\nStill running. kubectl --kubeconfig {cp.kubeconfig_path} get nodes")
            _say(f"Private cloud API: {api.url} (e.g. curl {api.url}/v1/machines)")
            _say(f"ccm log: {daemon.log_path}. Press Ctrl-C to stop.")
            # Blocked only now: the children started above must not inherit a blocked SIGTERM.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        ok = True
        return 0
    finally:
        if daemon is not None:
            code = daemon.stop()
            _say(f"\n==> ccm stopped (exit code {code})")
        if cp is not None:
            cp.stop()
        api.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _say(f"==> Logs kept in {workdir}")
        _say("==> Control plane and private cloud stopped; nothing left running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the control plane, the private cloud and ccm running; print how to reach them",
    )
    args = parser.parse_args(argv)
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
