"""Nodes as a kubelet registers them, for the end-to-end tests of a provider.

A kubelet started with ``--cloud-provider=external`` registers its Node with the
``node.cloudprovider.kubernetes.io/uninitialized`` taint, the ``kubernetes.io/hostname`` label and
its status (a Ready condition) in the same request, and keeps the Ready condition up to date. With
no kubelet in the test cluster, a provider's e2e test does both through the official ``kubernetes``
client (the tests' independent observer of what ccm did):

.. code-block:: python

    from ccm.testing import kubelet

    def test_nodes_are_initialized(kube_core):  # fixture of ccm.testing.pytest_plugin
        kubelet.register_node(kube_core, "node-1")
        ...  # start the daemon
        kubelet.wait(lambda: not kubelet.is_uninitialized(kube_core.read_node("node-1")), "init")
        kubelet.set_ready(kube_core, "node-1", False)

The ``kube_core`` fixture deletes, after the test, the Nodes :func:`register_node` registered
through it. The ``kubernetes`` package is imported lazily, so this module loads without it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ccm import wellknown

__all__ = [
    "delete_registered",
    "is_uninitialized",
    "node_body",
    "ready_condition",
    "register_node",
    "set_ready",
    "wait",
]

_registered: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ready_condition(ready: bool, *, message: str = "test") -> dict[str, Any]:
    """The Ready condition a kubelet posts (reason ``KubeletReady`` or ``KubeletNotReady``)."""
    now = _now()
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def node_body(
    name: str,
    *,
    ready: bool = True,
    pod_cidr: str | None = None,
    addresses: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The Node a kubelet with ``--cloud-provider=external`` registers: the uninitialized taint,
    the hostname label, a Ready condition, and optionally a pod CIDR and ``(type, address)``
    addresses."""
    spec: dict[str, Any] = {
        "taints": [{"key": wellknown.TAINT_UNINITIALIZED, "value": "true", "effect": "NoSchedule"}]
    }
    if pod_cidr is not None:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = [pod_cidr]
    status: dict[str, Any] = {"conditions": [ready_condition(ready)]}
    if addresses:
        status["addresses"] = [{"type": t, "address": a} for t, a in addresses]
    return {
        "metadata": {"name": name, "labels": {wellknown.LABEL_HOSTNAME: name}},
        "spec": spec,
        "status": status,
    }


def register_node(
    core: Any,
    name: str,
    *,
    ready: bool = True,
    pod_cidr: str | None = None,
    addresses: Sequence[tuple[str, str]] = (),
) -> Any:
    """Create the Node of :func:`node_body` with ``core`` (a ``kubernetes.client.CoreV1Api``) and
    remember its name for :func:`delete_registered`; returns the created Node."""
    node = core.create_node(node_body(name, ready=ready, pod_cidr=pod_cidr, addresses=addresses))
    _registered.setdefault(core, []).append(name)
    return node


def set_ready(core: Any, name: str, ready: bool) -> None:
    """Post a fresh Ready condition on Node ``name``, as its kubelet would."""
    core.patch_node_status(name, {"status": {"conditions": [ready_condition(ready)]}})


def delete_registered(core: Any) -> None:
    """Delete the Nodes :func:`register_node` created through ``core`` (already gone is fine)."""
    from kubernetes.client.exceptions import ApiException

    for name in _registered.pop(core, []):
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def is_uninitialized(node: Any) -> bool:
    """Whether a Node (a ``kubernetes`` client model) still has the uninitialized taint."""
    return any(t.key == wellknown.TAINT_UNINITIALIZED for t in node.spec.taints or [])


def wait(
    predicate: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.2
) -> Any:
    """Poll ``predicate`` every ``interval`` seconds until it returns a true value, and return that
    value; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}")
