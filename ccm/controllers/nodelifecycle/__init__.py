"""The cloud node lifecycle controller (``cloud-node-lifecycle-controller``): deletes Nodes whose
instance is gone from the cloud and taints Nodes whose instance is shut down.

Ports ``controllers/nodelifecycle/node_lifecycle_controller.go`` of k8s.io/cloud-provider
(UPSTREAM_SPEC §2.2): :mod:`.controller` (the sweep and the decisions), :mod:`.cloud` (the
questions to the cloud) and :mod:`.rules` (the pure rules). Every ``--node-monitor-period``
(sliding, like ``wait.Until``) one sweep looks at every cached Node:

- Ready ``True`` → the shutdown taint is removed when the cached Node carries it (no API call
  otherwise);
- Ready ``False``/``Unknown``/missing → the cloud is asked whether the instance exists
  (InstancesV2 ``instance_exists``, or Instances ``instance_exists_by_provider_id`` with the
  providerID of the Node, else the one from ``instance_id``; ``InstanceNotFoundError`` there means
  "gone"). Gone → Normal event ``DeletingNode`` and DELETE of the Node (Warning
  ``DeletingNodeFailed`` on failure). Exists and shut down → the taint
  ``node.cloudprovider.kubernetes.io/shutdown:NoSchedule`` is added.

Never delete on doubt: a cloud error, a cloud call running longer than ``cloud_timeout`` or an
``InstanceNotFoundError`` raised by ``instance_exists`` leaves the Node alone, with a log line
giving the reason (upstream behaviour).

Deliberate differences from upstream:

- the Nodes of one sweep are checked concurrently, at most ``concurrency`` (the ccm flag
  ``--concurrent-node-lifecycle-syncs``, default :data:`DEFAULT_CONCURRENCY`) at a time, so a
  slow cloud makes a sweep take ``ceil(nodes / concurrency) x latency`` instead of
  ``nodes x latency``; a sweep still never overlaps the next one
  (:class:`~ccm.controllers.base.PeriodicLoop`);
- every cloud call is bounded by ``cloud_timeout`` (``--cloud-call-timeout``);
- when the provider offers the optional InstancesBatch capability (with InstancesV2), a sweep
  asks ``instance_exists_batch`` (then ``instance_shutdown_batch`` for the Nodes that exist) in
  chunks of ``max_batch_size`` instead of one call per Node; per Node nothing changes (an
  Exception for a Node is doubt: never deleted);
- a decision is never taken on the snapshot the sweep started from alone, since the cloud may
  take seconds to answer: before the DELETE the Node is read afresh from the apiserver and kept
  when it turned Ready, was replaced (another UID) or changed its providerID meanwhile; the DELETE
  carries preconditions on that read's UID and resourceVersion, so any later write to the Node
  makes it fail. Such a Node is logged and decided again on the next sweep (no retry loop, no
  ``DeletingNodeFailed`` event), as is a Node already gone (404);
- taints are written with a strategic merge patch of ``spec.taints`` guarded by the Node's
  resourceVersion (5 attempts, a fresh GET after a conflict), and the shutdown taint is added only
  when the cached Node lacks it (upstream GETs the Node on every sweep) and the Node it is written
  to is still not Ready (the guard makes a Node that turned Ready meanwhile fail the write, and
  the fresh read then shows it Ready);
- the shutdown taint of a NotReady Node is removed on the sweep that finds its instance existing
  and no longer shut down (upstream removes it only once the Node is Ready, so a Node whose
  kubelet does not come back keeps claiming a shut-down instance); a cloud error or timeout on the
  shutdown check leaves the taint as it is;
- a Node whose instance the cloud reports gone while its ``spec.providerID`` is malformed (not
  ``<provider>://<id>``) is not deleted: the answer is about an identifier that cannot name an
  instance. A Warning event ``InvalidProviderID`` and an error log line say so (once per Node UID
  and providerID; later sweeps log at -v 2).
"""

from ccm.controllers.nodelifecycle.cloud import get_provider_id
from ccm.controllers.nodelifecycle.controller import (
    DEFAULT_CONCURRENCY,
    CloudNodeLifecycleController,
    KubeWriter,
    Recorder,
)
from ccm.controllers.nodelifecycle.rules import SHUTDOWN_TAINT, ready_status

__all__ = [
    "DEFAULT_CONCURRENCY",
    "SHUTDOWN_TAINT",
    "CloudNodeLifecycleController",
    "KubeWriter",
    "Recorder",
    "get_provider_id",
    "ready_status",
]
