"""``make demo``: the main job of ccm on an embedded control plane, start to finish.

1. starts a real kube-apiserver and etcd on 127.0.0.1 (built from source and cached on first use);
2. registers Nodes the way a kubelet started with ``--cloud-provider=external`` does: tainted
   ``node.cloudprovider.kubernetes.io/uninitialized``, no providerID, no topology labels;
3. starts the ``ccm`` daemon with the fake cloud provider, which knows those machines;
4. prints the Nodes before and after, and what the daemon said at start-up;
5. stops everything and exits 0 (``--keep`` leaves it all running and prints the kubeconfig).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ccm import wellknown
from ccm.testing.controlplane import ControlPlane
from ccm.testing.daemon import Daemon

MACHINES = {
    "worker-a": {
        "providerID": "fake://i-0a1",
        "instanceType": "m5.large",
        "zone": "eu-west-1a",
        "ip": "10.0.1.11",
        "public": "198.51.100.11",
    },
    "worker-b": {
        "providerID": "fake://i-0b2",
        "instanceType": "m5.large",
        "zone": "eu-west-1b",
        "ip": "10.0.2.12",
        "public": "198.51.100.12",
    },
    "worker-c": {
        "providerID": "fake://i-0c3",
        "instanceType": "c5.2xlarge",
        "zone": "eu-west-1c",
        "ip": "10.0.3.13",
        "public": "198.51.100.13",
    },
    "gpu-d": {
        "providerID": "fake://i-0d4",
        "instanceType": "p4d.24xlarge",
        "zone": "eu-west-1a",
        "ip": "10.0.1.14",
        "public": "198.51.100.14",
    },
}
REGION = "eu-west-1"


def _say(text: str) -> None:
    print(text, flush=True)


def _check(status: int, body: bytes, what: str) -> Any:
    if status >= 300:
        raise SystemExit(f"demo: {what} failed: HTTP {status}: {body[:300]!r}")
    return json.loads(body) if body else None


def _register_node(cp: ControlPlane, name: str) -> None:
    """Register a Node with its status in one request, as a kubelet does."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        },
    }
    _check(*cp.request("POST", "/api/v1/nodes", node), f"create node {name}")


def _nodes(cp: ControlPlane) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _check(*cp.request("GET", "/api/v1/nodes"), "list nodes")["items"]
    return sorted(items, key=lambda n: n["metadata"]["name"])


def _table(nodes: list[dict[str, Any]]) -> str:
    rows = [
        (
            "NODE",
            "UNINITIALIZED TAINT",
            "PROVIDER ID",
            "INSTANCE TYPE",
            "ZONE",
            "REGION",
            "ADDRESSES",
        )
    ]
    for n in nodes:
        labels = n["metadata"].get("labels") or {}
        tainted = any(
            t.get("key") == wellknown.TAINT_UNINITIALIZED for t in n["spec"].get("taints") or []
        )
        addresses = ",".join(
            f"{a['type']}={a['address']}" for a in (n.get("status") or {}).get("addresses") or []
        )
        rows.append(
            (
                n["metadata"]["name"],
                "yes" if tainted else "-",
                n["spec"].get("providerID") or "-",
                labels.get(wellknown.LABEL_INSTANCE_TYPE, "-"),
                labels.get(wellknown.LABEL_ZONE, "-"),
                labels.get(wellknown.LABEL_REGION, "-"),
                addresses or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _cloud_config(workdir: Path) -> Path:
    instances = {
        name: {
            "providerID": m["providerID"],
            "instanceType": m["instanceType"],
            "zone": m["zone"],
            "region": REGION,
            "addresses": [
                {"type": "InternalIP", "address": m["ip"]},
                {"type": "ExternalIP", "address": m["public"]},
            ],
        }
        for name, m in MACHINES.items()
    }
    path = workdir / "fake-cloud.yaml"
    path.write_text(
        yaml.safe_dump({"instances": instances, "latency": {"*": 0.05}})
    )  # a little cloud latency
    return path


def run(keep: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ccm-demo-"))
    _say("==> Starting kube-apiserver and etcd on 127.0.0.1 (binaries are built once, then cached)")
    cp = ControlPlane().start()
    daemon: Daemon | None = None
    try:
        _say(f"    apiserver {cp.url} ready in {cp.startup_seconds:.1f}s")
        _say(f"==> Registering {len(MACHINES)} Nodes as kubelets with --cloud-provider=external do")
        for name in MACHINES:
            _register_node(cp, name)
        _say("\nBEFORE: every Node carries the uninitialized taint; nothing can be scheduled.\n")
        _say(_table(_nodes(cp)))

        _say("\n==> Starting ccm with the fake cloud provider")
        daemon = Daemon(
            [
                "--cloud-provider=fake",
                f"--cloud-config={_cloud_config(workdir)}",
                f"--kubeconfig={cp.kubeconfig_path}",
                "--cluster-cidr=10.244.0.0/16",
            ],
            log_dir=workdir,
        )
        start = time.monotonic()
        daemon.start()
        deadline = start + 60
        while time.monotonic() < deadline:
            nodes = _nodes(cp)
            if all(
                not any(
                    t.get("key") == wellknown.TAINT_UNINITIALIZED
                    for t in n["spec"].get("taints") or []
                )
                and len((n.get("status") or {}).get("addresses") or []) >= 3
                for n in nodes
            ):
                break
            time.sleep(0.2)
        else:
            _say(daemon.tail(40))
            raise SystemExit("demo: the Nodes were not initialized within 60s")
        took = time.monotonic() - start
        _say("\nWhat ccm said at start-up:")
        for line in daemon.log_lines():
            if any(
                k in line
                for k in (
                    "optional interface",
                    "Skipping",
                    "Started",
                    "successfully acquired lease",
                )
            ):
                _say("    " + line.split(" ", 3)[-1])
        _say(
            f"\nAFTER ({took:.1f}s, including start-up): providerID, instance type, zone and "
            "region labels and cloud addresses are set;\nthe taint went away in the same write "
            "that added the labels.\n"
        )
        _say(_table(_nodes(cp)))
        if keep:
            _say(f"\nStill running. kubectl --kubeconfig {cp.kubeconfig_path} get nodes")
            _say(f"ccm log: {daemon.log_path}. Press Ctrl-C to stop.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        if daemon is not None:
            code = daemon.stop()
            _say(f"\n==> ccm stopped (exit code {code})")
        cp.stop()
        _say("==> Control plane stopped; nothing left running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the control plane and ccm running; print the kubeconfig",
    )
    args = parser.parse_args(argv)
    if args.keep:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
