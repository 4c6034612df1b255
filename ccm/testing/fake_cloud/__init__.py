"""The fake cloud provider: an in-memory cloud for unit tests, e2e tests, demos and benchmarks.

Plays the role of upstream ``fake/fake.go`` (k8s.io/cloud-provider), written afresh for ccm. It is
the entry point ``fake`` (``ccm --cloud-provider=fake --cloud-config=fake.yaml``) and is used
in-process by controller tests (``FakeCloud(...)``). It implements every capability of the
contract: InstancesV2, Instances (legacy), Zones, LoadBalancer, Routes and Clusters; each can be
switched off (its accessor then returns ``None``). The optional InstancesBatch capability is
implemented too, but off unless switched on (``FakeCapabilities(instances_batch=True)``, or
``capabilities: {instancesBatch: true}`` in the config); ``max_batch_size`` (config
``maxBatchSize``, default 100) is its ``max_batch_size``.

In-process API (details in the class docstrings)
================================================
``FakeCloud(provider_name="fake", capabilities=FakeCapabilities(routes=False),
instances=[FakeInstance(...)], default_instance=DefaultInstance(...), ...)``; every constructor
argument is also a public attribute (``capabilities.routes = False`` works at any time).

* Instances: ``add_instance(name, ...)``, ``remove_instance(name)``, ``instance_table[name]`` (a
  mutable :class:`FakeInstance`), ``default_instance`` (answers any other node name with generated
  metadata), ``find_instance(name, provider_id)``. (``instances()`` is the capability accessor.)
* Errors: ``inject_error(method, error, key=None, times=None)`` returns an :class:`ErrorRule`;
  ``clear_errors()``.
* Timing: ``set_latency(method, seconds)`` (an ``asyncio.sleep``, so looptime skips it),
  ``ignore_cancellation`` (a set of methods, ``"*"`` for every cloud call, whose latency sleep
  ignores cancellation: a misbehaving provider that answers late instead of stopping),
  ``set_rate_limit(qps, burst, reject=False)`` (token bucket; ``reject=True``: a call finding no
  token is refused at once with a RetryAfterError whose delay is when the next token comes, like an
  HTTP 429 with ``Retry-After``), ``call_hook`` (called, and awaited if it returns an awaitable,
  inside every call: block a call on an Event, observe concurrency, ...).
* Recorded calls: ``calls`` (list of :class:`FakeCall` ``(method, key)`` named tuples),
  ``call_counts`` (Counter per method), ``call_count(method, key=None)``, ``total_calls``,
  ``clear_calls()``.
* Load balancers: ``load_balancers`` (name → :class:`FakeLoadBalancer`),
  ``load_balancer_for(service_key)``.
* Routes: ``route_table`` (cluster → route name → :class:`~ccm.cloudprovider.Route`),
  ``add_route(cluster, route)``, ``set_route_blackhole(cluster, name_or_node)``.
* Lifecycle: ``initialized``, ``init_context``, ``initialized_cluster_name``, ``closed``.
* ``status()`` returns the status document described below; ``reload_state()`` forces a check.

Method names (for ``calls``, errors and latency)
================================================
InstancesV2: ``instance-exists``, ``instance-shutdown``, ``instance-metadata``.
InstancesBatch: ``instance-exists-batch``, ``instance-shutdown-batch``,
``instance-metadata-batch`` (one record, rate-limit charge and latency per batch call, recorded
with key ``""``; the call's identifiers are every node name and provider ID of the batch, so a
keyed rule of a batch method fails the whole call. Per Node, an error rule of the single method,
e.g. ``instance-metadata`` with ``key: node-1``, makes that Node's result the exception.
``batch_items`` / status ``batchItems`` counts the Nodes answered per batch method).
Instances: ``node-addresses``, ``node-addresses-by-provider-id``, ``instance-id``,
``instance-type``, ``instance-type-by-provider-id``, ``instance-exists-by-provider-id``,
``instance-shutdown-by-provider-id``, ``add-ssh-key-to-all-instances``, ``current-node-name``.
Zones: ``get-zone``, ``get-zone-by-provider-id``, ``get-zone-by-node-name``.
LoadBalancer: ``get``, ``create`` (ensure), ``update``, ``delete`` (ensure deleted).
Routes: ``list-routes``, ``create-route``, ``delete-route``. Clusters: ``list-clusters``,
``master``. Lifecycle: ``initialize``, ``aclose``. ``get_load_balancer_name`` is synchronous and
not recorded.

The key recorded with a call is the node name (InstancesV2 and name-keyed legacy methods), the
provider ID (``*-by-provider-id``), the service key ``namespace/name`` (load balancers), the target
node name (``create-route``, ``delete-route``), the cluster name (``list-routes``, ``master``,
``initialize``), the user (``add-ssh-key-to-all-instances``), the hostname (``current-node-name``)
or ``""``. An error rule with a ``key`` matches a call when the key equals any identifier of the
call: node name or provider ID; service key, service UID or load-balancer name; cluster name,
target node, route name or destination CIDR. Method ``"*"`` matches every cloud call but not
``initialize``/``aclose``.

Every call re-reads the state file if it changed, records the call, waits for the rate limiter,
sleeps its latency (at least ``asyncio.sleep(0)``: it suspends like real I/O), calls
``call_hook``, raises an injected error if a rule matches, and then does its work.

Config file (``--cloud-config``, YAML or JSON; every key is optional)
=====================================================================
::

    providerName: fake              # providerID prefix "<providerName>://"
    hasClusterID: true
    capabilities: {instancesV2: true, instances: true, zones: true, loadBalancer: true,
                   routes: true, clusters: true, instancesBatch: false}
    maxBatchSize: 100                 # InstancesBatch.max_batch_size
    loadBalancer:
      ipPool: 192.0.2.0/24          # ingress IP hashed from the service key, probing on collision
      ipMode: null                  # or VIP / Proxy (status.loadBalancer.ingress[].ipMode)
      rejectProtocols: [SCTP]       # ensure fails for a Service with a port of these protocols
      reportPorts: false            # fill status.loadBalancer.ingress[].ports
    localZone: {failureDomain: "", region: ""}     # Zones.get_zone()
    clusters: {names: [kubernetes], master: 127.0.0.1}
    routesEnableNodeAddresses: false  # listed routes opt in to node-address change detection
    routesAutoBlackhole: false        # listed routes whose target instance is gone are blackhole
    stateFile: /tmp/t/state.json      # written by the test, re-read on change (relative: to cwd)
    statusFile: /tmp/t/status.json    # written by the fake (temporary file + rename)
    statusInterval: 0.1               # seconds; changes reach the status file this late
    restoreFromStatus: true           # initialize() reloads LBs and routes from statusFile
    sharedStatus: false               # statusFile is the cloud of several processes (replicas)
    recordCalls: true                 # keep the (method, key) list; counters are always kept
    # the initial state: the same sections as the state file
    instances:
      node-1:
        providerID: fake://i-0001     # default: fake://<node name>
        instanceType: m5.large
        zone: zone-a
        region: region-1
        addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: node-1}]
        exists: true                  # false: gone (exists → False, metadata → InstanceNotFound)
        shutdown: false
        labels: {example.com/rack: r1}  # InstanceMetadata.additional_labels
    defaultInstance:                  # answers ANY node name not under instances
      instanceType: fake.medium
      zones: [zone-a, zone-b]         # picked by a hash of the node name
      region: region-1
      internalCIDR: 10.0.0.0/8        # InternalIP hashed from the node name
      externalCIDR: null              # optional ExternalIP, hashed too
      hostnameAddress: true           # add a Hostname address equal to the node name
      useProvidedNodeIP: true         # InstancesV2: alpha.kubernetes.io/provided-node-ip wins
      labels: {}
      shutdown: false
    errors:
      - {method: instance-metadata, key: node-1, kind: cloud, message: boom, times: 3}
      - {method: create, kind: retryAfter, retryAfter: 5}      # no times: forever
      # optional per rule: id (a label; FakeCloudState gives each injection a new one)
    latency: {"*": 0.01, instance-metadata: 0.2}
    ignoreCancellation: [instance-exists]   # or ["*"]: these calls sleep their whole latency even
                                            # when cancelled, then answer as if nothing happened
    rateLimit: {qps: 50, burst: 10}   # reject: true answers 429 + hint instead of waiting
    routes:
      - {cluster: kubernetes, name: r1, targetNode: node-1, destinationCIDR: 10.244.1.0/24}

Error kinds: ``cloud`` (CloudProviderError), ``retryAfter`` (RetryAfterError after ``retryAfter``
seconds, default 1), ``instanceNotFound``, ``implementedElsewhere``, ``notImplemented``
(NotImplementedByProviderError), ``generic`` (RuntimeError: the "any other exception" path). A
malformed config raises ConfigError with one line naming the first problem; the registry prefixes
``could not init cloud provider "fake": ``.

State file (``stateFile``: written by tests, usually with :class:`FakeCloudState`)
==================================================================================
The sections ``instances``, ``defaultInstance``, ``errors``, ``latency``, ``ignoreCancellation``,
``rateLimit`` and ``routes``, with the schema above. The fake stats the file on every call (mtime,
size, inode) and re-reads it when it changed. A section is applied, replacing the fake's current
value, when it appears or its content differs from the version applied last; ``null`` clears it. An
unchanged section is left alone, so rewriting the file to change the latency neither resets the
``times`` counters of errors nor drops the routes the controllers created (an error rule is re-armed
when its ``id`` changes: ``FakeCloudState.inject_error`` gives every injection a new one). A section
removed from the file leaves the current value in place; a missing file changes nothing. A malformed
file fails the factory at start-up; later it is ignored (the previous state stays) and reported as
``stateError`` in the status file. Write it atomically (``FakeCloudState.write`` does, and moves the
mtime forward so that quick rewrites are never missed).

Status file (``statusFile``: written by the fake, read with :class:`FakeCloudStatus`)
=====================================================================================
JSON, replaced atomically. Nothing is written before the first call (so a standby replica leaves
the leader's file alone). ``initialize`` and ``aclose`` write it at once; any other change (a call,
a load balancer, a route, a state reload) reaches it within ``statusInterval`` seconds: writes are
coalesced, so thousands of changes do not rewrite a large file thousands of times (0: write after
every change). Tests poll it::

    {"provider": "fake", "initialized": true, "clusterName": "kubernetes", "closed": false,
     "loadBalancers": {"a1b2...": {"name": "a1b2...", "service": "default/web",
         "serviceUID": "1b2...", "clusterName": "kubernetes",
         "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}],
         "nodes": ["node-1"], "ip": "192.0.2.17", "ingress": [{"ip": "192.0.2.17"}]}},
     "routes": {"kubernetes": [{"name": "...", "targetNode": "node-1",
         "destinationCIDR": "10.244.1.0/24", "blackhole": false, "targetNodeAddresses": []}]},
     "calls": {"instance-metadata": 3}, "callsByKey": {"instance-metadata": {"node-1": 3}},
     "totalCalls": 3, "batchItems": {"instance-metadata-batch": 0}, "stateGeneration": 1,
     "stateError": null}

Several processes, one cloud (``sharedStatus: true``)
=====================================================
Replicas of a daemon each hold their own fake; with ``sharedStatus`` the status file is their
common cloud. Each call first reloads the load balancers and routes from the status file when
another process changed it (before the latency sleep and again after it, so the change a call
makes applies to the current cloud), and every change is written at once (as with
``statusInterval: 0``). A deposed leader that keeps calling therefore acts on the same cloud as
the new leader, as it would on a real cloud. A reload, the change that follows and the write are
one step under a lock on ``<statusFile>.lock`` (``flock``), so two processes that change the cloud
at the same moment lose neither change.

Load balancers and routes
=========================
Load balancers are keyed by ``default_load_balancer_name(service)`` (``a-<namespace>-<name>`` for
a Service without a UID). Ensure is idempotent (same IP every time; ``spec.loadBalancerIP`` is
honoured) and replaces ports and backends. It fails with CloudProviderError(message) when the
Service has the annotation ``fake.ccm.io/reject: "<message>"`` or a port of a rejected protocol.
Update replaces the backends and fails when the load balancer does not exist. Delete is
idempotent. Routes are named ``<cluster>-<name hint>-<cidr>``. Create is idempotent for the same
target and CIDR and fails for a CIDR already routed to another node. Delete removes the route of
that name (else of that target and CIDR) and is a no-op when none matches: upstream's fake fails
there and poisons every later call, while a real cloud's delete is idempotent.

Everything runs in one event loop; no locks are needed because state changes happen between
awaits. File I/O is synchronous and small (a test double, not a production provider).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccm.testing.fake_cloud.documents import AddressSpec as AddressSpec
from ccm.testing.fake_cloud.documents import AddressType as AddressType
from ccm.testing.fake_cloud.documents import CapabilitiesSpec as CapabilitiesSpec
from ccm.testing.fake_cloud.documents import ClustersSpec as ClustersSpec
from ccm.testing.fake_cloud.documents import DefaultInstanceSpec as DefaultInstanceSpec
from ccm.testing.fake_cloud.documents import ErrorKind as ErrorKind
from ccm.testing.fake_cloud.documents import ErrorSpec as ErrorSpec
from ccm.testing.fake_cloud.documents import FakeCloudConfig, FakeCloudStatus
from ccm.testing.fake_cloud.documents import FakeCloudStateSpec as FakeCloudStateSpec
from ccm.testing.fake_cloud.documents import InstanceSpec as InstanceSpec
from ccm.testing.fake_cloud.documents import LoadBalancerSettings as LoadBalancerSettings
from ccm.testing.fake_cloud.documents import RateLimitSpec as RateLimitSpec
from ccm.testing.fake_cloud.documents import RouteSpec as RouteSpec
from ccm.testing.fake_cloud.documents import StatusLoadBalancer as StatusLoadBalancer
from ccm.testing.fake_cloud.documents import StatusPort as StatusPort
from ccm.testing.fake_cloud.documents import StatusRoute as StatusRoute
from ccm.testing.fake_cloud.documents import ZoneSpec as ZoneSpec
from ccm.testing.fake_cloud.faults import ErrorRule, make_error
from ccm.testing.fake_cloud.faults import ErrorSource as ErrorSource
from ccm.testing.fake_cloud.files import SHARED_LOCK_WAIT as SHARED_LOCK_WAIT
from ccm.testing.fake_cloud.methods import (
    ALL_METHODS,
    CLOUD_METHODS,
    DEFAULT_IP_POOL,
    REJECT_ANNOTATION,
)
from ccm.testing.fake_cloud.model import (
    DefaultInstance,
    FakeCall,
    FakeCapabilities,
    FakeInstance,
    FakeLoadBalancer,
    FakePort,
)
from ccm.testing.fake_cloud.provider import FakeCloud, FakeCloudFactory

if TYPE_CHECKING:
    from ccm.testing.fake_cloud.state import FakeCloudState

__all__ = [
    "ALL_METHODS",
    "CLOUD_METHODS",
    "DEFAULT_IP_POOL",
    "REJECT_ANNOTATION",
    "DefaultInstance",
    "ErrorRule",
    "FakeCall",
    "FakeCapabilities",
    "FakeCloud",
    "FakeCloudConfig",
    "FakeCloudFactory",
    "FakeCloudState",
    "FakeCloudStatus",
    "FakeInstance",
    "FakeLoadBalancer",
    "FakePort",
    "make_error",
]


def __getattr__(name: str) -> Any:
    # The test side of the state file (FakeCloudState) is imported on first use: the provider
    # itself, as the daemon loads it, does not need it.
    if name == "FakeCloudState":
        from ccm.testing.fake_cloud.state import FakeCloudState

        return FakeCloudState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
