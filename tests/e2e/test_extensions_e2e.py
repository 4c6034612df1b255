"""End to end, in process: a controller and a flag added to the ``ControllerManager`` on the real
kube-apiserver. The added controller is built only once the Lease is held, after
``CloudProvider.initialize``, with its own client and recorder and the shared informers (synced
with the cluster's Nodes); both it and the provider see the added flag's value."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ccm.app import manager, options
from ccm.cloudprovider import CloudProvider, Flag, FlagSet, InitContext
from ccm.kube import client as kclient

pytestmark = pytest.mark.e2e

FLAGS = FlagSet(name="probe", flags=(Flag(name="--probe-greeting", help="x", default="hi"),))


class Recording(CloudProvider):
    """A provider with no capability: only the added controller runs."""

    name = "probe"

    def __init__(self) -> None:
        self.init_context: InitContext | None = None

    async def initialize(self, ctx: InitContext) -> None:
        self.init_context = ctx


async def test_an_added_controller_runs_on_the_leader_with_the_added_flag(
    control_plane: Any, k8s_admin: Any, unique_name: Callable[..., str]
) -> None:
    from kubernetes import client

    node_names = {n.metadata.name for n in client.CoreV1Api(k8s_admin).list_node().items}
    cloud = Recording()
    seen: dict[str, Any] = {}
    ran = asyncio.Event()

    def init_probe(ctx: manager.ControllerContext) -> manager.Runnable:
        seen["initialized_first"] = cloud.init_context is not None
        seen["flags"] = dict(ctx.flags)
        seen["recorder"] = ctx.recorder.component
        nodes = ctx.informers.get(kclient.NODES)

        async def run() -> None:
            await nodes.wait_for_sync(30)
            seen["nodes"] = set(nodes.keys())
            seen["lease"] = await ctx.client.get(kclient.LEASES, lease, namespace="kube-system")
            ran.set()
            await asyncio.Event().wait()

        return run

    probe = manager.ControllerSpec(
        name="probe-controller", init=init_probe, disabled_by_default=True
    )
    specs = {**manager.default_controllers(), probe.name: probe}
    lease = unique_name("lease")
    opts = options.parse_args(
        [
            "--cloud-provider=probe",
            f"--kubeconfig={control_plane.kubeconfig_path}",
            f"--leader-elect-resource-name={lease}",
            "--secure-port=0",
            "--controllers=*,probe-controller",
            "--probe-greeting=hello",
        ],
        controllers=options.ControllerCatalog.of(specs.values()),
        flag_sets=[FLAGS],
    )
    mgr = manager.ControllerManager(opts, cloud, controllers=specs)
    task = asyncio.create_task(mgr.run(), name="e2e/manager")
    try:
        async with asyncio.timeout(60):
            await ran.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen["initialized_first"] is True
    assert cloud.init_context is not None
    assert dict(cloud.init_context.flags) == {"probe-greeting": "hello"}
    assert seen["flags"] == {"probe-greeting": "hello"}
    assert seen["recorder"] == "probe-controller"
    assert node_names <= seen["nodes"]
    # The Lease is held by this manager: the controller started on the leader.
    assert seen["lease"]["spec"]["holderIdentity"] == mgr.identity
