"""The operability flags: --dry-run."""

from __future__ import annotations

from ccm.app import options


def test_dry_run_is_off_by_default_and_a_bool_flag() -> None:
    assert options.parse_args(["--cloud-provider=fake"]).dry_run is False
    assert options.parse_args(["--cloud-provider=fake", "--dry-run"]).dry_run is True
    assert options.parse_args(["--cloud-provider=fake", "--dry-run=false"]).dry_run is False


def test_help_says_a_dry_run_takes_no_lease() -> None:
    text = " ".join(options.build_parser().format_help().split())
    assert "operability flags" in text
    assert "Leader election is off in a dry run" in text


def test_help_lists_the_installed_providers() -> None:
    text = " ".join(options.build_parser().format_help().split())
    assert "Installed cloud providers" in text
    listed = text.split("register()): ", 1)[1]
    assert "fake" in listed
