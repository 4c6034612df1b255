"""The bench's workload on the apiserver: a small admin client (one keep-alive connection per
thread), kubelet-shaped Nodes and ClusterIP Services, and the queries that count progress."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccm import errors, wellknown
from ccm.kube.blocking import BlockingClient
from ccm.testing.controlplane import ControlPlane

RESULTS = Path(__file__).resolve().parent / "results"
LABEL = "ccm-bench"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}


class Api:
    """The bench's admin client: ccm's own apiserver client on its own loop thread."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.kube = BlockingClient(
            str(cp.kubeconfig_path), user_agent="ccm-bench", request_timeout=60
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kube.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            try:
                sent_type = content_type if payload is not None else None
                return self.kube.request(
                    method, path, payload, content_type=sent_type, accept=accept
                )
            except errors.KubeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, raw = self.request(method, path, body, **kw)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw)

    def counters(self) -> Counters:
        """The apiserver's request counters, from one read of its ``/metrics``."""
        status, raw = self.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics: {status}")
        return Counters.parse(raw.decode())


@dataclass(frozen=True)
class Counters:
    """What the bench reads of kube-apiserver's ``/metrics``.

    ``requests``: ``apiserver_request_total`` for Nodes, Events, Services and Leases summed per
    ``verb resource/subresource``; ``throttled``: requests answered 429 (``http_429``) and those
    API Priority and Fairness rejected (``apf_rejected``), each over all labels;
    ``terminated_watchers``: watches the apiserver closed because their client did not keep up
    (``apiserver_terminated_watchers_total``, all resources)."""

    requests: dict[str, float]
    throttled: dict[str, float]
    terminated_watchers: float

    @classmethod
    def parse(cls, text: str) -> Counters:
        requests: dict[str, float] = {}
        throttled = {"http_429": 0.0, "apf_rejected": 0.0}
        terminated = 0.0
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{"):
                value = float(line.rsplit(" ", 1)[1])
                if 'code="429"' in line:
                    throttled["http_429"] += value
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
                if labels.get("resource") not in ("nodes", "events", "services", "leases"):
                    continue
                key = f"{labels['verb']} {labels['resource']}"
                if labels.get("subresource"):
                    key += "/" + labels["subresource"]
                requests[key] = requests.get(key, 0.0) + value
            elif line.startswith("apiserver_flowcontrol_rejected_requests_total{"):
                throttled["apf_rejected"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("apiserver_terminated_watchers_total"):
                terminated += float(line.rsplit(" ", 1)[1])
        return cls(requests, throttled, terminated)

    def since(self, before: Counters) -> dict[str, Any]:
        """The run's share: ``apiserver_writes`` (the write verbs), ``apiserver_requests`` (every
        verb), ``throttled`` and ``watchers_terminated``, as the results record them."""
        requests = diff_counts(self.requests, before.requests)
        return {
            "apiserver_writes": {
                k: v for k, v in requests.items() if k.split(" ", 1)[0] in WRITE_VERBS
            },
            "apiserver_requests": requests,
            "throttled": diff_counts(self.throttled, before.throttled),
            "watchers_terminated": int(self.terminated_watchers - before.terminated_watchers),
        }


def diff_counts(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {
        k: int(v - before.get(k, 0.0)) for k, v in sorted(after.items()) if v - before.get(k, 0.0)
    }


def kubelet_node(name: str, tag: str) -> dict[str, Any]:
    """A Node as a kubelet with --cloud-provider=external registers it (status included)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    images = [
        {
            "names": [
                f"registry.example.com/team-{i}/service-{i}@sha256:{i:064x}",
                f"registry.example.com/team-{i}/service-{i}:v1.{i}.0",
            ],
            "sizeBytes": 10_000_000 + i * 1_234_567,
        }
        for i in range(12)
    ]
    resources = {
        "cpu": "8",
        "memory": "32827784Ki",
        "pods": "110",
        "ephemeral-storage": "203056560Ki",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                LABEL: tag,
                wellknown.LABEL_HOSTNAME: name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "taints": [
                {"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}
            ]
        },
        "status": {
            "addresses": [{"type": "Hostname", "address": name}],
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "capacity": resources,
            "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{abs(hash(name)):032x}"[:32],
                "systemUUID": f"{abs(hash(name + 'u')):032x}"[:32],
                "bootID": f"{abs(hash(name + 'b')):032x}"[:32],
                "kernelVersion": "6.8.0-1015-generic",
                "osImage": "Ubuntu 24.04.1 LTS",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.36.3",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": images,
        },
    }


def parallel(items: Sequence[Any], fn: Any, threads: int = 12) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items):
            pass
    return time.monotonic() - started


def create_nodes(api: Api, tag: str, count: int) -> tuple[list[str], float]:
    names = [f"{tag}-{i:05d}" for i in range(count)]

    def one(name: str) -> None:
        api.json("POST", "/api/v1/nodes?fieldManager=kubelet", kubelet_node(name, tag))

    return names, parallel(names, one)


def delete_nodes(api: Api, tag: str) -> None:
    selector = urllib.parse.quote(f"{LABEL}={tag}")
    api.request("DELETE", f"/api/v1/nodes?labelSelector={selector}")


def create_services(api: Api, namespace: str, count: int) -> float:
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})

    def one(i: int) -> None:
        body = {
            "metadata": {"name": f"svc-{i:05d}", "labels": {LABEL: namespace}},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
        api.json("POST", f"/api/v1/namespaces/{namespace}/services", body)

    return parallel(list(range(count)), one)


def uninitialized(api: Api, tag: str) -> int:
    selector = urllib.parse.quote(f"{LABEL}={tag},!{INSTANCE_TYPE_LABEL}")
    doc = api.json(
        "GET",
        f"/api/v1/nodes?labelSelector={selector}&resourceVersion=0",
        accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    return len(doc.get("items") or [])


def still_tainted(api: Api, tag: str) -> int:
    selector = urllib.parse.quote(f"{LABEL}={tag}")
    doc = api.json("GET", f"/api/v1/nodes?labelSelector={selector}")
    return sum(
        1
        for n in doc["items"]
        if any(t["key"] == wellknown.TAINT_UNINITIALIZED for t in n["spec"].get("taints") or [])
    )


def lease_holder(api: Api, name: str) -> str:
    status, raw = api.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"
    )
    if status != 200:
        return ""
    return str(json.loads(raw).get("spec", {}).get("holderIdentity") or "")


def any_initialized(api: Api, tag: str) -> bool:
    """Whether one of the run's Nodes carries the instance-type label yet (one item asked)."""
    selector = urllib.parse.quote(f"{LABEL}={tag},{INSTANCE_TYPE_LABEL}")
    doc = api.json(
        "GET",
        f"/api/v1/nodes?labelSelector={selector}&limit=1",
        accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    return bool(doc.get("items"))
