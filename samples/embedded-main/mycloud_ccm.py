"""mycloud-ccm: a cloud controller manager of one's own, built on ccm (upstream's
``sample/basic_main.go`` and ``NewCloudControllerManagerCommand``, in Python).

An embedding program does five things:

1. registers its provider in code (``ccm.cloudprovider.register``), not with an entry point;
2. chooses its own defaults (an ``Options``): here the provider name, cluster name, Lease name and
   no cloud routes, so ``mycloud-ccm --kubeconfig=...`` needs no other flag — every upstream flag
   still works and overrides them;
3. names the Kubernetes clients of its controllers (upstream's custom ``ClientName`` s): they become
   the User-Agent suffix of each controller's requests and, with
   ``--use-service-account-credentials``, the ServiceAccount each controller runs as (which then
   needs RBAC of your own: the shipped RBAC names the default ServiceAccounts);
4. adds a controller of its own, ``mycloud-node-tagger`` (alias ``tagger``, off unless named:
   ``--controllers=*,mycloud-node-tagger``): it copies the cloud tags of each initialized Node's
   machine onto the Node as labels. It runs on the leader only, with the shared Node informer, its
   own client and event recorder, and calls the cloud through ccm's budget (``call_cloud``);
5. adds a flag of its own, ``--mycloud-tag-prefix`` (shown in ``--help`` under "mycloud flags"):
   the label prefix of the copied tags; the tagger does not run without it.

Run: ``python samples/embedded-main/mycloud_ccm.py --kubeconfig=$KUBECONFIG``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from ccm import names, wellknown
from ccm.app.manager import ControllerContext, ControllerSpec, Runnable, default_controllers
from ccm.app.options import Options
from ccm.cli import run
from ccm.cloudprovider import (
    CloudProvider,
    Flag,
    FlagSet,
    InstanceMetadata,
    InstancesV2,
    Node,
    register,
)
from ccm.controllers import base, cloudapi
from ccm.errors import NotFoundError
from ccm.kube import client as kclient
from ccm.kube import workqueue

PROG = "mycloud-ccm"
TAGGER = "mycloud-node-tagger"

#: Upstream's sample names, one Kubernetes client per controller (and one for ours).
CLIENT_NAMES = {
    names.CLOUD_NODE_CONTROLLER: "mycloud-external-cloud-node-controller",
    names.CLOUD_NODE_LIFECYCLE_CONTROLLER: "mycloud-external-cloud-node-lifecycle-controller",
    names.SERVICE_LB_CONTROLLER: "mycloud-external-service-controller",
    names.NODE_ROUTE_CONTROLLER: "mycloud-external-route-controller",
    TAGGER: "mycloud-node-tagger",
}

#: This daemon's defaults; flags on the command line still override each one.
DEFAULTS = Options(
    cloud_provider="mycloud",
    cluster_name="mycloud",
    configure_cloud_routes=False,
    leader_elect_resource_name="mycloud-cloud-controller-manager",
    node_monitor_period=2.0,
)

#: This daemon's own flags: every name starts with --mycloud-.
FLAGS = FlagSet(
    name="mycloud",
    flags=(
        Flag(
            name="--mycloud-tag-prefix",
            help="Label prefix of the cloud tags the mycloud-node-tagger controller copies onto "
            "initialized Nodes (e.g. tags.mycloud.example.com/); empty: the tagger does not run.",
            default="",
            metavar="PREFIX",
        ),
    ),
)

_log = logging.getLogger("mycloud.tagger")


class MyCloud(CloudProvider):
    """Stands in for your provider. In "mycloud" every Node is a machine of type mc.standard in
    zone mc-zone-1 of region mc-1, its ID is the Node name, and it is tagged ``team=blue``."""

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

    async def instance_tags(self, node: Node) -> Mapping[str, str]:
        """The tags of the Node's machine (not part of the ccm contract: this cloud's own)."""
        return {"team": "blue", "machine": node.provider_id.removeprefix("mycloud://")}


class NodeTagger:
    """Copies the cloud tags of every initialized Node's machine onto the Node as labels named
    ``<prefix><tag>``: a work queue of Node names fed by the shared Node informer."""

    def __init__(self, ctx: ControllerContext, cloud: MyCloud, prefix: str) -> None:
        self._client = ctx.client
        self._recorder = ctx.recorder
        self._cloud = cloud
        self._prefix = prefix
        self._timeout = ctx.options.cloud_call_timeout
        self._nodes = ctx.informers.get(kclient.NODES)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            TAGGER, rate_limiter=workqueue.default_controller_rate_limiter()
        )
        self._loop = base.WorkQueueLoop(name=TAGGER, queue=self.queue, reconcile=self.sync)
        self._nodes.add_handler(
            on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new)
        )

    def _enqueue(self, node: Mapping[str, Any]) -> None:
        self.queue.add(str(node["metadata"]["name"]))

    async def run(self) -> None:
        await self._nodes.wait_for_sync()
        await self._loop.run()

    async def sync(self, name: str) -> None:
        node = self._nodes.get(name)
        if node is None:
            return
        view = Node(node)
        tainted = any(t.get("key") == wellknown.TAINT_UNINITIALIZED for t in view.taints)
        if tainted or not view.provider_id:
            return  # not initialized yet: its update event brings it back
        tags = await base.call_cloud(
            self._cloud.instance_tags(view),
            self._timeout,
            "instance_tags",
            capability=cloudapi.INSTANCES,
        )
        want = {f"{self._prefix}{key}": value for key, value in tags.items()}
        if all(view.labels.get(k) == v for k, v in want.items()):
            return
        try:
            await self._client.patch(kclient.NODES, name, {"metadata": {"labels": want}})
        except NotFoundError:
            return
        _log.info("Tagged node %s with %s", name, sorted(want))
        self._recorder.event(
            node, wellknown.EVENT_NORMAL, "TagsSynced", f"Copied {len(want)} cloud tags"
        )


def init_tagger(ctx: ControllerContext) -> Runnable | str:
    prefix = str(ctx.flags.get("mycloud-tag-prefix") or "")
    if not prefix:
        return "--mycloud-tag-prefix is empty"
    if not isinstance(ctx.cloud, MyCloud):
        return "the cloud provider is not mycloud"
    return NodeTagger(ctx, ctx.cloud, prefix).run


def controllers() -> dict[str, ControllerSpec]:
    """ccm's controllers plus the tagger, which runs only when named in --controllers."""
    return {
        **default_controllers(),
        TAGGER: ControllerSpec(
            name=TAGGER, init=init_tagger, aliases=("tagger",), disabled_by_default=True
        ),
    }


def main(argv: list[str] | None = None) -> int:
    register("mycloud", lambda config: MyCloud())
    return run(
        argv,
        prog=PROG,
        defaults=DEFAULTS,
        controllers=controllers(),
        client_names=CLIENT_NAMES,
        flag_sets=[FLAGS],
    )


if __name__ == "__main__":
    sys.exit(main())
