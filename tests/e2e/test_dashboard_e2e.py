"""End to end: every metric the Grafana dashboard (docs/dashboard/ccm.json) queries is served on
a running daemon's ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ccm.testing.daemon import Daemon

from ..dashboard import DASHBOARD, exposed_names, load, metric_names
from .conftest import FakeCloudFiles

pytestmark = pytest.mark.e2e


def test_every_metric_of_the_dashboard_is_on_a_running_daemons_metrics(
    fake_cloud_files: Callable[..., FakeCloudFiles],
    daemon_factory: Callable[..., Daemon],
    metrics_token: str,
) -> None:
    daemon = daemon_factory(fake_cloud_files())
    daemon.wait_for_log('Started "service-lb-controller"')
    code, body = daemon.get("/metrics", token=metrics_token)
    assert code == 200, body
    served = exposed_names(body)
    used = {name for expr in load(DASHBOARD) for name in metric_names(expr)}
    assert len(used) >= 20
    missing = sorted(used - served)
    assert not missing, f"queried by the dashboard but not served: {missing}"
