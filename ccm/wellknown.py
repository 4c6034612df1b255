"""Upstream strings, byte-identical and defined once: taints, labels, annotations, finalizer, ports,
event reasons and messages, component names.

Ports ``api/well_known_taints.go``, ``api/well_known_annotations.go``, ``ports.go`` of
k8s.io/cloud-provider, the well-known labels of k8s.io/api ``core/v1/well_known_labels.go`` and the
event reasons of each controller.
"""

from __future__ import annotations

from typing import Final

# Taints
TAINT_UNINITIALIZED: Final = "node.cloudprovider.kubernetes.io/uninitialized"
TAINT_SHUTDOWN: Final = "node.cloudprovider.kubernetes.io/shutdown"
TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER: Final = "ToBeDeletedByClusterAutoscaler"
TAINT_EFFECT_NO_SCHEDULE: Final = "NoSchedule"
TAINT_EFFECT_NO_EXECUTE: Final = "NoExecute"
TAINT_NODE_NOT_READY: Final = "node.kubernetes.io/not-ready"
TAINT_CONTROL_PLANE: Final = "node-role.kubernetes.io/control-plane"

# Feature gates (KEP-5237): the route controller's watch-based mode
FEATURE_GATE_WATCH_BASED_ROUTES: Final = "CloudControllerManagerWatchBasedRoutesReconciliation"

# Annotations
ANNOTATION_PROVIDED_NODE_IP: Final = "alpha.kubernetes.io/provided-node-ip"

# Labels: GA and the beta labels they replaced
LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
LABEL_INSTANCE_TYPE_BETA: Final = "beta.kubernetes.io/instance-type"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"
LABEL_ZONE_BETA: Final = "failure-domain.beta.kubernetes.io/zone"
LABEL_REGION: Final = "topology.kubernetes.io/region"
LABEL_REGION_BETA: Final = "failure-domain.beta.kubernetes.io/region"
LABEL_HOSTNAME: Final = "kubernetes.io/hostname"
LABEL_EXCLUDE_FROM_EXTERNAL_LB: Final = "node.kubernetes.io/exclude-from-external-load-balancers"
LABEL_CONTROL_PLANE: Final = "node-role.kubernetes.io/control-plane"

#: (beta, GA) pairs reconciled by the node controller; the beta label is the source of truth.
BETA_TO_GA_LABELS: Final = (
    (LABEL_ZONE_BETA, LABEL_ZONE),
    (LABEL_REGION_BETA, LABEL_REGION),
    (LABEL_INSTANCE_TYPE_BETA, LABEL_INSTANCE_TYPE),
)

# Service load balancers
FINALIZER_LOAD_BALANCER_CLEANUP: Final = "service.kubernetes.io/load-balancer-cleanup"

# Ports
CLOUD_CONTROLLER_MANAGER_PORT: Final = 10258

# Node address types and conditions
ADDRESS_HOSTNAME: Final = "Hostname"
ADDRESS_INTERNAL_IP: Final = "InternalIP"
ADDRESS_EXTERNAL_IP: Final = "ExternalIP"
ADDRESS_INTERNAL_DNS: Final = "InternalDNS"
ADDRESS_EXTERNAL_DNS: Final = "ExternalDNS"
CONDITION_READY: Final = "Ready"
CONDITION_NETWORK_UNAVAILABLE: Final = "NetworkUnavailable"

# Event types
EVENT_NORMAL: Final = "Normal"
EVENT_WARNING: Final = "Warning"

# Event reasons and messages: cloud node controller
EVENT_REASON_SYNCED: Final = "Synced"
EVENT_MESSAGE_NODE_SYNCED: Final = "Node synced successfully"
# ccm addition: a Warning on the Node when initialization fails (upstream only logs).
EVENT_REASON_FAILED_TO_INITIALIZE: Final = "FailedToInitializeNode"

# Event reasons: cloud node lifecycle controller
EVENT_REASON_DELETING_NODE: Final = "DeletingNode"
EVENT_REASON_DELETING_NODE_FAILED: Final = "DeletingNodeFailed"

# Event reasons: route controller
EVENT_REASON_FAILED_TO_CREATE_ROUTE: Final = "FailedToCreateRoute"
ROUTE_CONDITION_REASON_CREATED: Final = "RouteCreated"
ROUTE_CONDITION_REASON_NOT_CREATED: Final = "NoRouteCreated"
ROUTE_CONDITION_MESSAGE_CREATED: Final = "RouteController created a route"
ROUTE_CONDITION_MESSAGE_NOT_CREATED: Final = "RouteController failed to create a route"

# Event reasons: service controller
EVENT_REASON_ENSURING_LB: Final = "EnsuringLoadBalancer"
EVENT_REASON_ENSURED_LB: Final = "EnsuredLoadBalancer"
EVENT_REASON_DELETING_LB: Final = "DeletingLoadBalancer"
EVENT_REASON_DELETED_LB: Final = "DeletedLoadBalancer"
EVENT_REASON_DELETE_LB_FAILED: Final = "DeleteLoadBalancerFailed"
EVENT_REASON_SYNC_LB_FAILED: Final = "SyncLoadBalancerFailed"
EVENT_REASON_UPDATED_LB: Final = "UpdatedLoadBalancer"
EVENT_REASON_UPDATE_LB_FAILED: Final = "UpdateLoadBalancerFailed"
EVENT_REASON_UNAVAILABLE_LB: Final = "UnAvailableLoadBalancer"

# Component / leader election
COMPONENT_NAME: Final = "cloud-controller-manager"
DEFAULT_LEADER_ELECTION_NAMESPACE: Final = "kube-system"
DEFAULT_LEADER_ELECTION_NAME: Final = "cloud-controller-manager"

# ccm addition (cloud node lifecycle controller): a Warning on a Node that is NOT deleted although
# the cloud reports no instance, because its spec.providerID is malformed.
EVENT_REASON_INVALID_PROVIDER_ID: Final = "InvalidProviderID"

# Event messages: service controller (the fixed ones; the others carry an error).
EVENT_MESSAGE_ENSURING_LB: Final = "Ensuring load balancer"
EVENT_MESSAGE_ENSURED_LB: Final = "Ensured load balancer"
EVENT_MESSAGE_DELETING_LB: Final = "Deleting load balancer"
EVENT_MESSAGE_DELETED_LB: Final = "Deleted load balancer"
EVENT_MESSAGE_UPDATED_LB: Final = "Updated load balancer with new hosts"
EVENT_MESSAGE_UNAVAILABLE_LB: Final = "There are no available nodes for LoadBalancer"
