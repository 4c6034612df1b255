"""Flag parsing and validation: upstream names, defaults, --controllers semantics, one-line
errors."""

from __future__ import annotations

import pytest

from ccm import names
from ccm.app import options
from ccm.errors import ConfigError


def test_defaults_match_upstream() -> None:
    o = options.parse_args(["--cloud-provider=fake"])
    assert o.controllers == ["*"]
    assert o.concurrent_node_status_updates == 0
    assert o.node_status_update_frequency == 300.0
    assert o.node_monitor_period == 5.0
    assert o.route_reconciliation_period == 10.0
    assert o.configure_cloud_routes is True
    assert o.cluster_name == "kubernetes"
    assert (
        o.leader_elect,
        o.leader_elect_lease_duration,
        o.leader_elect_renew_deadline,
        o.leader_elect_retry_period,
    ) == (True, 15.0, 10.0, 2.0)
    assert o.leader_elect_resource_name == "cloud-controller-manager"
    assert o.leader_elect_resource_namespace == "kube-system"
    assert o.secure_port == 10258 and o.bind_address == "0.0.0.0"


def test_throughput_defaults_are_ccms_own_and_upstreams_are_one_flag_away() -> None:
    o = options.parse_args(["--cloud-provider=fake"])
    assert (o.concurrent_node_syncs, o.concurrent_service_syncs) == (10, 20)
    assert (o.kube_api_qps, o.kube_api_burst) == (200.0, 300)
    flags = [f"{k}={v}" for k, v in options.UPSTREAM_THROUGHPUT_DEFAULTS.items()]
    u = options.parse_args(["--cloud-provider=fake", *flags])
    assert (u.concurrent_node_syncs, u.concurrent_service_syncs) == (1, 1)
    assert (u.kube_api_qps, u.kube_api_burst) == (20.0, 30)


def test_help_names_the_upstream_default_of_each_changed_setting() -> None:
    text = options.build_parser().format_help()
    for flag, value in options.UPSTREAM_THROUGHPUT_DEFAULTS.items():
        start = text.index("\n  " + flag)
        assert f"(upstream default: {value:g})" in " ".join(text[start : start + 400].split())


def test_the_cloud_api_budget_is_off_by_default_and_documented() -> None:
    o = options.parse_args(["--cloud-provider=fake"])
    assert (o.cloud_api_qps, o.cloud_api_burst) == (0.0, 10)
    o = options.parse_args(["--cloud-provider=fake", "--cloud-api-qps=5", "--cloud-api-burst=2"])
    assert (o.cloud_api_qps, o.cloud_api_burst) == (5.0, 2)
    text = " ".join(options.build_parser().format_help().split())
    assert "--cloud-api-qps QPS ccm: cloud provider calls per second" in text
    assert "--cloud-api-burst N" in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("5s", 5.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("300ms", 0.3),
        ("12h", 43200.0),
        ("1.5s", 1.5),
    ],
)
def test_parses_go_durations(text: str, seconds: float) -> None:
    assert options.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "s", "1m-3s"])
def test_rejects_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        options.parse_duration(text)


def test_go_style_booleans() -> None:
    assert (
        options.parse_args(["--cloud-provider=fake", "--leader-elect=false"]).leader_elect is False
    )
    assert options.parse_args(
        ["--cloud-provider=fake", "--configure-cloud-routes"]
    ).configure_cloud_routes
    o = options.parse_args(["--cloud-provider", "fake", "--node-monitor-period", "1m", "-v", "4"])
    assert o.node_monitor_period == 60.0 and o.verbosity == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--cloud-provider cannot be empty"),
        (
            ["--cloud-provider=fake", "--controllers=bogus"],
            '"bogus" is not in the list of known controllers',
        ),
        (["--cloud-provider=fake", "--concurrent-node-syncs=0"], "--concurrent-node-syncs"),
        (["--cloud-provider=fake", "--node-monitor-period=soon"], "--node-monitor-period"),
        (
            ["--cloud-provider=fake", "--leader-elect-lease-duration=5s"],
            "--leader-elect-lease-duration",
        ),
        (
            ["--cloud-provider=fake", "--leader-elect-resource-lock=endpoints"],
            "--leader-elect-resource-lock",
        ),
        (["--cloud-provider=fake", "--no-such-flag"], "--no-such-flag"),
        (["--cloud-provider=fake", "--tls-cert-file=/x"], "--tls-private-key-file"),
        (["--cloud-provider=fake", "positional"], "positional"),
        (["--cloud-provider=fake", "--cloud-api-qps=-1"], "--cloud-api-qps must be >= 0"),
        (["--cloud-provider=fake", "--cloud-api-qps=nan"], "--cloud-api-qps must be >= 0"),
        (["--cloud-provider=fake", "--cloud-api-burst=0"], "--cloud-api-burst must be at least 1"),
    ],
)
def test_bad_flags_raise_one_line_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        options.parse_args(argv)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


ALL = set(names.BY_NAME)


@pytest.mark.parametrize(
    ("controllers", "expected"),
    [
        pytest.param(["*"], ALL, id="star enables all"),
        pytest.param([], set(), id="empty list runs nothing"),
        pytest.param(["*", "-route"], ALL - {names.NODE_ROUTE_CONTROLLER}, id="alias disable"),
        pytest.param(["cloud-node"], {names.CLOUD_NODE_CONTROLLER}, id="alias enable"),
        pytest.param(
            ["-service", "service", "*"], ALL - {names.SERVICE_LB_CONTROLLER}, id="first match wins"
        ),
        pytest.param(
            ["service-lb-controller", "-service-lb-controller"],
            {names.SERVICE_LB_CONTROLLER},
            id="first exact name wins",
        ),
    ],
)
def test_controllers_flag_semantics(controllers: list[str], expected: set[str]) -> None:
    enabled = options.enabled_controllers(controllers)
    assert {n for n, on in enabled.items() if on} == expected


def test_cluster_cidr_parsing() -> None:
    o = options.Options(cloud_provider="fake", cluster_cidr="10.244.0.0/16,fd00::/48")
    assert [str(n) for n in o.cluster_cidrs()] == ["10.244.0.0/16", "fd00::/48"]
    for bad in ("", "10.0.0.0/8,10.1.0.0/16", "a,b,c", "nonsense"):
        with pytest.raises(ConfigError, match="--cluster-cidr"):
            options.Options(cloud_provider="fake", cluster_cidr=bad).cluster_cidrs()
