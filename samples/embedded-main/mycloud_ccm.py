"""mycloud-ccm: a cloud controller manager of one's own, built on ccm (upstream's
``sample/basic_main.go``, in Python).

An embedding program does three things:

1. registers its provider in code (``ccm.cloudprovider.register``), not with an entry point;
2. chooses its own defaults (an ``Options``): here the provider name, cluster name, Lease name and
   no cloud routes, so ``mycloud-ccm --kubeconfig=...`` needs no other flag — every upstream flag
   still works and overrides them;
3. names the Kubernetes clients of its controllers (upstream's custom ``ClientName`` s): they become
   the User-Agent suffix of each controller's requests and, with
   ``--use-service-account-credentials``, the ServiceAccount each controller runs as (which then
   needs RBAC of your own: the shipped RBAC names the default ServiceAccounts).

Run: ``python samples/embedded-main/mycloud_ccm.py --kubeconfig=$KUBECONFIG``.
"""

from __future__ import annotations

import sys

from ccm import names
from ccm.app.main import run
from ccm.app.options import Options
from ccm.cloudprovider import CloudProvider, InstanceMetadata, InstancesV2, Node, register

PROG = "mycloud-ccm"

#: Upstream's sample names, one Kubernetes client per controller.
CLIENT_NAMES = {
    names.CLOUD_NODE_CONTROLLER: "mycloud-external-cloud-node-controller",
    names.CLOUD_NODE_LIFECYCLE_CONTROLLER: "mycloud-external-cloud-node-lifecycle-controller",
    names.SERVICE_LB_CONTROLLER: "mycloud-external-service-controller",
    names.NODE_ROUTE_CONTROLLER: "mycloud-external-route-controller",
}

#: This daemon's defaults; flags on the command line still override each one.
DEFAULTS = Options(
    cloud_provider="mycloud",
    cluster_name="mycloud",
    configure_cloud_routes=False,
    leader_elect_resource_name="mycloud-cloud-controller-manager",
    node_monitor_period=2.0,
)


class MyCloud(CloudProvider):
    """Stands in for your provider. In "mycloud" every Node is a machine of type mc.standard in
    zone mc-zone-1 of region mc-1, and its ID is the Node name."""

    name = "mycloud"

    def instances_v2(self) -> InstancesV2 | None:
        return self

    async def instance_exists(self, node: Node) -> bool:
        return True

    async def instance_shutdown(self, node: Node) -> bool:
        return False

    async def instance_metadata(self, node: Node) -> InstanceMetadata | None:
        return InstanceMetadata(
            provider_id=f"mycloud://{node.name}",
            instance_type="mc.standard",
            zone="mc-zone-1",
            region="mc-1",
            additional_labels={"mycloud.example.com/managed": "true"},
        )


def main(argv: list[str] | None = None) -> int:
    register("mycloud", lambda config: MyCloud())
    return run(argv, prog=PROG, defaults=DEFAULTS, client_names=CLIENT_NAMES)


if __name__ == "__main__":
    sys.exit(main())
