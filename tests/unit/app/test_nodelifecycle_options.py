"""The ccm-only flag ``--concurrent-node-lifecycle-syncs`` and its wiring into the cloud node
lifecycle controller."""

from __future__ import annotations

import pytest

from ccm.app import manager, options
from ccm.controllers import nodelifecycle
from ccm.errors import ConfigError
from ccm.kube import client as kclient
from ccm.kube import events as kevents
from ccm.kube.fake import FakeKubeClient
from ccm.testing.fake_cloud import FakeCloud


def test_default_is_ten() -> None:
    opts = options.parse_args(["--cloud-provider=fake"])
    assert opts.concurrent_node_lifecycle_syncs == 10 == nodelifecycle.DEFAULT_CONCURRENCY


def test_flag_is_parsed() -> None:
    opts = options.parse_args(["--cloud-provider=fake", "--concurrent-node-lifecycle-syncs=3"])
    assert opts.concurrent_node_lifecycle_syncs == 3


@pytest.mark.parametrize("value", ["0", "-2"])
def test_flag_must_be_positive(value: str) -> None:
    with pytest.raises(ConfigError, match="--concurrent-node-lifecycle-syncs must be greater"):
        options.parse_args(["--cloud-provider=fake", f"--concurrent-node-lifecycle-syncs={value}"])


async def test_manager_passes_the_flags_to_the_controller() -> None:
    opts = options.parse_args(
        [
            "--cloud-provider=fake",
            "--concurrent-node-lifecycle-syncs=4",
            "--node-monitor-period=2s",
            "--cloud-call-timeout=7s",
        ]
    )
    client = FakeKubeClient()
    try:
        ctx = manager.ControllerContext(
            options=opts,
            cloud=FakeCloud(),
            client=client,
            recorder=kevents.EventRecorder(client, component="cloud-node-lifecycle-controller"),
            informers=manager.SharedInformers(client, resync_period=None),
        )
        spec = manager.default_controllers()["cloud-node-lifecycle-controller"]
        assert spec.init is not None
        run = spec.init(ctx)
        assert not isinstance(run, str)
        controller = run.__self__  # type: ignore[attr-defined]
        assert isinstance(controller, nodelifecycle.CloudNodeLifecycleController)
        assert controller._concurrency == 4
        assert controller._period == 2.0
        assert controller._cloud_timeout == 7.0
        assert controller._nodes is ctx.informers.get(kclient.NODES)
    finally:
        await client.aclose()
