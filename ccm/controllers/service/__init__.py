"""The service load-balancer controller (``service-lb-controller``): a cloud load balancer for every
``type: LoadBalancer`` Service without a ``loadBalancerClass``, its ingress in the Service status,
and a finalizer that guarantees the load balancer is deleted with the Service.

Ports ``controllers/service/controller.go`` of k8s.io/cloud-provider (UPSTREAM_SPEC §2.4). Two
queues as upstream: ``service`` (``--concurrent-service-syncs`` workers, per-key backoff 5 s → 300
s, RetryAfterError requeued after exactly its delay by the failure switch) and ``node`` (one
worker and one key, so Node changes coalesce; a pass re-syncs the backends of every load balancer,
failures fall back to a full ensure via the service queue).

The package reads in this order: :mod:`.controller` (the queues, the event handlers, the
workers), :mod:`.sync` (one Service's sync as a sequence of named steps), :mod:`.nodesync` (the
backends of every load balancer when Nodes change) and :mod:`.state` (what both paths share). The
pure predicates and patches live in :mod:`ccm.controllers.servicehelpers`.

Deliberate differences from upstream:
- a Service being deleted (deletionTimestamp) always takes the delete branch, even without our
  finalizer (upstream tries to add the finalizer, which the apiserver forbids, and retries forever);
- a Service delete event enqueues the key when the controller has handled that Service before, so a
  load balancer is deleted even when someone stripped our finalizer (upstream ignores deletes);
- ensure/delete of a Service and the node-sync update of the same Service are serialized by a
  per-Service lock, and the node-sync backend set is computed under it (upstream can race a slow
  ``UpdateLoadBalancer`` with stale hosts against a newer ensure);
- the node sync skips a Service that is being deleted or no longer wants a load balancer,
  judged on both the version the controller last processed and the informer's current one (upstream
  still calls ``UpdateLoadBalancer`` for it until the service worker gets to it, racing the
  delete); a Service gone from the informer is left to the delete path too;
- a Service without a load balancer yet comes first: its key goes to the service queue's high lane,
  while a Service that already shows an ingress (re-added by a start-up or relist) and the retries
  of a node sync go to the low lane; while such a first sync runs, the node sync makes one cloud
  call at a time (:class:`ccm.controllers.priority.PriorityGate`);
- every cloud call is bounded by ``--cloud-call-timeout``;
- providers get read-only views (:mod:`ccm.cloudprovider.objects`), never cache objects.
"""

from ccm.controllers.service.controller import (
    MAX_RETRY_DELAY,
    MIN_RETRY_DELAY,
    NODE_SYNC_KEY,
    KubeWriter,
    ServiceController,
)
from ccm.controllers.service.state import Recorder, ServiceSyncError
from ccm.errors import CloudCallTimeoutError

__all__ = [
    "MAX_RETRY_DELAY",
    "MIN_RETRY_DELAY",
    "NODE_SYNC_KEY",
    "CloudCallTimeoutError",
    "KubeWriter",
    "Recorder",
    "ServiceController",
    "ServiceSyncError",
]
