"""Prometheus metrics with upstream names, defined once.

Ports the metric definitions of ``controllers/node/metrics.go``, ``controllers/service/metrics.go``,
``controllers/route/metrics.go`` and component-base's workqueue, leader-election and controller
metrics. All live in :data:`REGISTRY`, which ``/metrics`` serves, with the standard process,
platform and GC collectors of ``prometheus_client`` (``process_*``, ``python_info``,
``python_gc_*``) and component-base's ``kubernetes_build_info``. A provider registers its own
metrics in the same registry (``ccm.cloudprovider.METRICS_REGISTRY`` is this one) to have them
served on ``/metrics``.
"""

from __future__ import annotations

import platform
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

import ccm

__all__ = [
    "BUILD_INFO",
    "EVENT_LOOP_LAG",
    "LEADER_ELECTION_MASTER_STATUS",
    "LEADER_ELECTION_SLOWPATH_TOTAL",
    "NODE_INITIAL_SYNC_DELAY",
    "NODE_TAINT_REMOVAL_DELAY",
    "REGISTRY",
    "REST_CLIENT_RATE_LIMITER_DURATION",
    "REST_CLIENT_REQUESTS",
    "REST_CLIENT_REQUEST_DURATION",
    "ROUTE_SYNC_TOTAL",
    "RUNNING_MANAGED_CONTROLLERS",
    "WORKQUEUE_ADDS",
    "WORKQUEUE_DEPTH",
    "WORKQUEUE_LONGEST_RUNNING",
    "WORKQUEUE_QUEUE_DURATION",
    "WORKQUEUE_RETRIES",
    "WORKQUEUE_UNFINISHED_WORK",
    "WORKQUEUE_WORK_DURATION",
]

REGISTRY = CollectorRegistry(auto_describe=True)

# The standard collectors (the default registry's, which ccm does not serve): process_* (CPU,
# memory, file descriptors, start time), python_info, python_gc_*.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def _version() -> str:
    return ccm.version()


# component-base metrics/prometheus/version: upstream's name and labels. ``git_version`` is ccm's
# version with upstream's "v" prefix; ``go_version`` and ``compiler`` name the interpreter that
# runs ccm (``python3.11.9``, ``cpython``), ``platform`` is GOOS/GOARCH-style (``linux/amd64``).
BUILD_INFO = Gauge(
    "kubernetes_build_info",
    "A metric with a constant '1' value labeled by major, minor, git version, git commit, git "
    "tree state, build date, Go version, and compiler from which Kubernetes was built, and "
    "platform on which it is running.",
    [
        "major",
        "minor",
        "git_version",
        "git_commit",
        "git_tree_state",
        "build_date",
        "go_version",
        "compiler",
        "platform",
    ],
    registry=REGISTRY,
)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _build_info_labels() -> tuple[str, ...]:
    version = _version()
    major, _, rest = version.partition(".")
    minor = rest.partition(".")[0]
    machine = platform.machine().lower()
    return (
        major,
        minor,
        f"v{version}",
        "",
        "",
        "",
        f"python{platform.python_version()}",
        sys.implementation.name,
        f"{sys.platform}/{_ARCH.get(machine, machine)}",
    )


BUILD_INFO.labels(*_build_info_labels()).set(1)

_NODE_DELAY_BUCKETS = tuple(float(4**k) for k in range(6))  # 1·4^k, 6 buckets
_WORKQUEUE_BUCKETS = tuple(10.0**k for k in range(-8, 2))  # 1e-8 … 10 s, 10 buckets

NODE_TAINT_REMOVAL_DELAY = Histogram(
    "node_controller_cloud_provider_taint_removal_delay_seconds",
    "Number of seconds after node creation when NodeController removed the cloud-provider taint "
    "of a single node.",
    buckets=_NODE_DELAY_BUCKETS,
    registry=REGISTRY,
)
NODE_INITIAL_SYNC_DELAY = Histogram(
    "node_controller_initial_node_sync_delay_seconds",
    "Number of seconds after node creation when NodeController finished the initial "
    "synchronization of a single node.",
    buckets=_NODE_DELAY_BUCKETS,
    registry=REGISTRY,
)

RUNNING_MANAGED_CONTROLLERS = Gauge(
    "running_managed_controllers",
    "Indicates where instances of a controller are currently running",
    ["name", "manager"],
    registry=REGISTRY,
)

LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease.",
    ["name"],
    registry=REGISTRY,
)
LEADER_ELECTION_SLOWPATH_TOTAL = Counter(
    "leader_election_slowpath",
    "Total number of slow path exercised in renewing leader leases. 'name' is the string used "
    "to identify the lease.",
    ["name"],
    registry=REGISTRY,
)

WORKQUEUE_DEPTH = Gauge(
    "workqueue_depth", "Current depth of workqueue", ["name"], registry=REGISTRY
)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds", "Total number of adds handled by workqueue", ["name"], registry=REGISTRY
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested.",
    ["name"],
    buckets=_WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name"],
    buckets=_WORKQUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST_RUNNING = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries", "Total number of retries handled by workqueue", ["name"], registry=REGISTRY
)

# client-go's rest_client_* metrics (component-base metrics/prometheus/restclient), fed by ccm.kube.
_REST_LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
REST_CLIENT_REQUESTS = Counter(
    "rest_client_requests",
    "Number of HTTP requests, partitioned by status code, method, and host.",
    ["code", "method", "host"],
    registry=REGISTRY,
)
REST_CLIENT_REQUEST_DURATION = Histogram(
    "rest_client_request_duration_seconds",
    "Request latency in seconds. Broken down by verb, and host.",
    ["verb", "host"],
    buckets=_REST_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REST_CLIENT_RATE_LIMITER_DURATION = Histogram(
    "rest_client_rate_limiter_duration_seconds",
    "Client side rate limiter latency in seconds. Broken down by verb, and host.",
    ["verb", "host"],
    buckets=_REST_LATENCY_BUCKETS,
    registry=REGISTRY,
)

# controllers/route/metrics.go (ALPHA, since 1.36): one increment per full route reconcile.
ROUTE_SYNC_TOTAL = Counter(
    "route_controller_route_sync",
    "A metric counting the amount of times routes have been synced with the cloud provider.",
    registry=REGISTRY,
)

# controllers/service/metrics.go (prometheus_client appends ``_total`` to counters).
_SERVICE_LATENCY_BUCKETS = tuple(float(2**k) for k in range(15))  # 1·2^k s, 15 buckets
SERVICE_LOADBALANCER_SYNC = Counter(
    "service_controller_loadbalancer_sync",
    "A metric counting the amount of times any load balancer has been configured, as an effect "
    "of service/node changes on the cluster",
    registry=REGISTRY,
)
SERVICE_NODESYNC_ERROR = Counter(
    "service_controller_nodesync_error",
    "A metric counting the amount of times any load balancer has been configured and errored, "
    "as an effect of node changes on the cluster",
    registry=REGISTRY,
)
SERVICE_NODESYNC_LATENCY = Histogram(
    "service_controller_nodesync_latency_seconds",
    "A metric measuring the latency for nodesync which updates loadbalancer hosts on cluster "
    "node updates.",
    buckets=_SERVICE_LATENCY_BUCKETS,
    registry=REGISTRY,
)
SERVICE_UPDATE_LB_HOST_LATENCY = Histogram(
    "service_controller_update_loadbalancer_host_latency_seconds",
    "A metric measuring the latency for updating each load balancer hosts.",
    buckets=_SERVICE_LATENCY_BUCKETS,
    registry=REGISTRY,
)
__all__ += [
    "SERVICE_LOADBALANCER_SYNC",
    "SERVICE_NODESYNC_ERROR",
    "SERVICE_NODESYNC_LATENCY",
    "SERVICE_UPDATE_LB_HOST_LATENCY",
]

# ccm's own (no upstream equivalent: a Go controller manager has no single event loop).
EVENT_LOOP_LAG = Histogram(
    "ccm_event_loop_lag_seconds",
    "How much later than scheduled a timer fired on the daemon's event loop, sampled every 100 ms.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)

# ccm's cloud API metrics (ccm.controllers.cloudapi), in the style of the AWS cloud controller
# manager's cloudprovider_aws_api_request_duration_seconds, ..._api_request_errors and
# ..._api_throttled_requests_total, for any provider. ``capability`` is instances, zones,
# load_balancer, routes or clusters; ``method`` the provider method (instance_metadata, ...).
_CLOUD_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CLOUD_API_REQUEST_DURATION = Histogram(
    "ccm_cloud_api_request_duration_seconds",
    "Latency of cloud provider calls made by the controllers, by capability and method "
    "(the time waited for the cloud API budget is not included).",
    ["capability", "method"],
    buckets=_CLOUD_API_BUCKETS,
    registry=REGISTRY,
)
CLOUD_API_REQUEST_ERRORS = Counter(
    "ccm_cloud_api_request_errors",
    "Cloud provider calls that raised, by capability, method and reason (throttled, timeout, "
    "not_found, not_implemented, implemented_elsewhere, cloud, other).",
    ["capability", "method", "reason"],
    registry=REGISTRY,
)
CLOUD_API_THROTTLED_REQUESTS = Counter(
    "ccm_cloud_api_throttled_requests",
    "Cloud provider calls answered with RetryAfterError (throttled), by capability and method; "
    "each pauses its capability for the delay asked.",
    ["capability", "method"],
    registry=REGISTRY,
)
CLOUD_API_BUDGET_WAIT = Histogram(
    "ccm_cloud_api_budget_wait_seconds",
    "How long cloud provider calls waited before being sent: for a capability paused by a "
    "throttled answer, then for a token of --cloud-api-qps/--cloud-api-burst.",
    ["capability"],
    buckets=(0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
__all__ += [
    "CLOUD_API_BUDGET_WAIT",
    "CLOUD_API_REQUEST_DURATION",
    "CLOUD_API_REQUEST_ERRORS",
    "CLOUD_API_THROTTLED_REQUESTS",
]
