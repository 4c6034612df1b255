"""Dry run (``--dry-run``): every loop runs and reads, nothing is written, every would-be write is
logged and counted.

The way to try ccm beside the controller manager that runs a cluster today: ccm reads the cluster
and the cloud as a normal run does and says, one log line per write, what it would have changed
(``dry run: would PATCH nodes/n1``, ``dry run: would call ensure_load_balancer``), counted in
``ccm_dry_run_writes_total{controller,verb}``.

The interception sits in the two places every write passes, the same two that fencing guards
(:mod:`ccm.fencing`), so no controller, event recorder or provider task can bypass it:

* the Kubernetes client's write verbs (create, update, patch, delete: :mod:`ccm.kube.client`),
  Events included; the client answers a would-be write as the apiserver would have, from a fresh
  read (a patch) or the request itself (a create), without sending it;
* the cloud calls that change the cloud (:data:`ccm.fencing.MUTATING_CLOUD_CALLS`, in
  ``ccm.controllers.base.call_cloud``): the provider is not called.

Reviews the secure server sends to authenticate its callers (TokenReview, SubjectAccessReview)
persist nothing and still go out. Dry run is process-wide (a module switch, not a context
variable), so a thread or a task created anywhere sees it too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import Counter

from ccm import logs, metrics

__all__ = ["DRY_RUN_WRITES", "active", "enabled", "would_write"]

DRY_RUN_WRITES = Counter(
    "ccm_dry_run_writes_total",
    "Writes a dry run did not make, by controller and verb (Kubernetes create, update, patch, "
    "delete; or the cloud call, such as ensure_load_balancer).",
    ["controller", "verb"],
    registry=metrics.REGISTRY,
)

_log = logging.getLogger("ccm.dryrun")
_ACTIVE = False


def active() -> bool:
    """True while a dry run is on."""
    return _ACTIVE


@contextlib.contextmanager
def enabled() -> Iterator[None]:
    """Turn dry run on for the whole process until the block ends."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, True
    try:
        yield
    finally:
        _ACTIVE = previous


def would_write(verb: str, target: str, **detail: object) -> None:
    """Log and count one write the dry run did not make. ``verb`` is the Kubernetes verb or the
    cloud method, ``target`` what it would have written (``nodes/n1``, ``default/web``); the
    controller comes from the fields bound to the running code (:func:`ccm.logs.bind`)."""
    controller = str(logs.fields().get("controller", ""))
    DRY_RUN_WRITES.labels(controller, verb).inc()
    _log.info(
        "dry run: would %s %s",
        verb,
        target,
        extra={"dry_run": True, "verb": verb, "target": target, **detail},
    )
