"""The upstream cloud-controller-manager's command line is accepted (ccm/app/upstream-flags.txt):
every flag parses, those ccm does not implement are reported once, --help follows upstream's
groups with defaults shown."""

from __future__ import annotations

import logging

import pytest

from ccm.app import options, upstreamflags
from ccm.app.main import run
from ccm.cloudprovider import Flag, FlagSet
from ccm.controllers.route import WATCH_BASED_FEATURE_GATE


def _accepted() -> set[str]:
    return {s for a in options.build_parser()._actions for s in a.option_strings}


def test_the_flag_list_is_upstreams_v136() -> None:
    flags = upstreamflags.upstream_flags()
    names = [f.name for f in flags]
    assert len(names) == len(set(names)) == 81
    groups = {f.group for f in flags}
    assert {
        "Generic flags",
        "Secure serving flags",
        "Authorization flags",
        "Global flags",
    } <= groups
    by_name = {f.name: f for f in flags}
    assert by_name["--leader-elect"].is_bool
    assert by_name["--kube-api-qps"].kind == "float32"


def test_every_upstream_flag_is_accepted() -> None:
    missing = sorted({f.name for f in upstreamflags.upstream_flags()} - _accepted())
    assert missing == []


def test_a_full_upstream_command_line_parses_and_names_the_ignored_flags() -> None:
    argv = ["--cloud-provider=fake"]
    ignored: list[str] = []
    implemented = {a.dest for a in options.build_parser()._actions}
    for flag in upstreamflags.upstream_flags():
        if flag.name in ("--version", "--cloud-provider"):
            continue
        dest = upstreamflags.DEST_PREFIX + flag.name
        if dest not in implemented:
            continue
        ignored.append(flag.name)
        argv.append(flag.name if flag.is_bool else f"{flag.name}=x")
    opts = options.parse_args(argv)
    assert opts.ignored_upstream_flags == sorted(ignored)
    assert "--tls-cipher-suites" in ignored
    assert "--tls-min-version" not in ignored  # implemented
    assert "--contention-profiling" in ignored
    assert opts.cloud_provider == "fake"


def test_an_ignored_boolean_takes_a_go_boolean() -> None:
    opts = options.parse_args(["--cloud-provider=fake", "--permit-port-sharing=false"])
    assert opts.ignored_upstream_flags == ["--permit-port-sharing"]
    with pytest.raises(options.ConfigError):
        options.parse_args(["--cloud-provider=fake", "--permit-port-sharing=maybe"])


def test_implemented_flags_are_not_reported_as_ignored() -> None:
    opts = options.parse_args(["--cloud-provider=fake", "--kube-api-qps=5", "--profiling=false"])
    assert opts.ignored_upstream_flags == []


def test_ignored_flags_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ccm.app"):
        upstreamflags.log_ignored(["--vmodule", "--cert-dir"])
        upstreamflags.log_ignored([])
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Ignoring upstream cloud-controller-manager flags that ccm does not implement: "
        "--cert-dir, --vmodule"
    ]


def test_help_groups_defaults_and_subcommands() -> None:
    text = options.build_parser().format_help()
    for group in ("Generic flags:", "Secure serving flags:", "Global flags:", "ccm flags:"):
        assert group in text
    assert text.index("Generic flags:") < text.index("ccm flags:") < text.index("subcommands:")
    assert "ccm conformance" in text
    flat = " ".join(text.split())
    assert "(default 10) (upstream default: 1)" in flat  # --concurrent-node-syncs
    assert "(default 200) (upstream default: 20)" in flat  # --kube-api-qps
    assert "(default 5m0s)" in flat  # --node-status-update-frequency
    (gates,) = [a for a in options.build_parser()._actions if "--feature-gates" in a.option_strings]
    assert f"{WATCH_BASED_FEATURE_GATE}=true|false" in str(gates.help)


def test_version_accepts_upstreams_raw_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version=raw"]) == 0
    assert capsys.readouterr().out.startswith("ccm ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (2, "2s"), (90, "1m30s"), (300, "5m0s"), (43200, "12h0m0s")],
)
def test_go_duration_format(seconds: float, text: str) -> None:
    assert upstreamflags.format_duration(seconds) == text


def test_a_provider_flag_named_like_an_ignored_upstream_flag_is_the_providers() -> None:
    # Provider flags carry the provider's name: one named "webhook" may own --webhook-cert-dir.
    flags = FlagSet(name="webhook", flags=(Flag(name="--webhook-cert-dir", help="my certs"),))
    opts = options.parse_args(
        ["--cloud-provider=fake", "--webhook-cert-dir=/certs"], flag_sets=[flags]
    )
    assert opts.extension_flags["webhook-cert-dir"] == "/certs"
    assert opts.ignored_upstream_flags == []
