"""Logging set-up: text and JSON formats, klog-like -v levels, one line per event."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ccm import logs


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_format_is_one_line_with_fields() -> None:
    out = io.StringIO()
    logs.configure("text", 0, stream=out)
    logging.getLogger("ccm.test").info("Initializing node %s", "n1", extra={"node": "n1"})
    line = out.getvalue()
    assert line.count("\n") == 1
    assert "INFO ccm.test Initializing node n1 node=n1" in line


def test_json_format_is_one_object_per_line() -> None:
    out = io.StringIO()
    logs.configure("json", 0, stream=out)
    logging.getLogger("ccm.test").warning("careful", extra={"count": 3})
    record = json.loads(out.getvalue())
    assert record["level"] == "warning"
    assert record["msg"] == "careful"
    assert record["count"] == 3


def test_verbosity_gates_v_levels() -> None:
    out = io.StringIO()
    logs.configure("text", 2, stream=out)
    log = logging.getLogger("ccm.test")
    log.log(logs.v(2), "shown at -v 2")
    log.log(logs.v(3), "hidden at -v 2")
    assert "shown at -v 2" in out.getvalue()
    assert "hidden" not in out.getvalue()
    assert " V2 " in out.getvalue()


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown logging format"):
        logs.configure("xml", 0)
