"""The one boolean parser (Go's ``strconv.ParseBool``) and the places that use it."""

from __future__ import annotations

import pytest

from ccm import wellknown
from ccm.app import options
from ccm.cloudprovider.strconv import parse_bool
from ccm.controllers import servicehelpers


@pytest.mark.parametrize("text", ["1", "t", "T", "true", "TRUE", "True", True])
def test_go_true_values(text: str | bool) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "false", "FALSE", "False", False])
def test_go_false_values(text: str | bool) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "yes", "no", "tRUE", " true", "2", "on"])
def test_anything_else_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_bool(text)


@pytest.mark.parametrize(("value", "included"), [("T", False), ("0", True), ("yes", False)])
def test_the_service_controller_reads_the_exclusion_label_with_it(
    value: str, included: bool
) -> None:
    node = {"metadata": {"labels": {wellknown.LABEL_EXCLUDE_FROM_EXTERNAL_LB: value}}}
    assert servicehelpers.node_included(node) is included


@pytest.mark.parametrize(("text", "expected"), [("T", True), ("0", False)])
def test_the_flags_read_booleans_with_it(text: str, expected: bool) -> None:
    opts = options.parse_args(["--cloud-provider=fake", f"--dry-run={text}"])
    assert opts.dry_run is expected
