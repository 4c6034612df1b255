"""The cloud node controller (``cloud-node-controller``): initializes Nodes that carry the
``node.cloudprovider.kubernetes.io/uninitialized`` taint, then keeps their addresses fresh.

Ports ``controllers/node/node_controller.go`` of k8s.io/cloud-provider (UPSTREAM_SPEC §2.1):
:mod:`.controller` (the queue, the initialization, the address refresh) and :mod:`.metadata` (the
legacy Instances path of the instance metadata). The pure parts (the initialization patch, the
addresses) live in :mod:`ccm.controllers.nodeutil`. Deliberate differences from upstream:

- initialization is ONE patch of the Node (providerID, labels and the taint removal together,
  guarded by the Node's resourceVersion) instead of a full ``Update``; on conflict the Node is read
  again. It is a strategic merge patch whose fields mean what a JSON merge patch would (the
  apiserver's cheaper path: no JSON round trip of the whole Node);
- addresses are written with a strategic merge patch of ``nodes/status`` whose list carries
  ``$patch: replace`` (the list replaced whole: no merging by address type, no ordering
  surprises);
- a failed initialization also records a Warning event ``FailedToInitializeNode`` on the Node
  (upstream only logs), so ``kubectl describe node`` tells why the taint stays;
- the periodic address refresh skips a Node whose InstancesV2 metadata is ``None`` with a log line
  (upstream dereferences nil and panics);
- when the provider offers the optional InstancesBatch capability (with InstancesV2), concurrent
  ``instance_metadata`` requests (initializations and address refreshes) are coalesced into
  ``instance_metadata_batch`` calls (:mod:`ccm.controllers.batching`); each Node keeps the
  semantics of the single call. A call with room also asks for the uninitialized Nodes waiting
  next in the work queue (read-ahead, keyed by the Node's resourceVersion), so a burst of new
  Nodes costs about one call per ``max_batch_size`` Nodes whatever the apiserver's write latency;
- initialization comes first: a tainted Node's key goes to the work queue's high lane (untainted
  Nodes, which a start-up or relist re-adds by the thousand, to the low lane); while a Node is
  being initialized the address refresh makes one cloud call at a time
  (:class:`ccm.controllers.priority.PriorityGate`), and its batched metadata request goes ahead of
  the refresh's waiting ones.
"""

from ccm.controllers.node.controller import CloudNodeController, KubeWriter, Recorder
from ccm.controllers.node.metadata import NodeInitializationError

__all__ = ["CloudNodeController", "KubeWriter", "NodeInitializationError", "Recorder"]
