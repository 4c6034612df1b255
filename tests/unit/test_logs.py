"""Logging set-up: text and JSON formats, klog-like -v levels, one line per event."""

from __future__ import annotations

import enum
import io
import json
import logging
from collections.abc import Iterator

import hypothesis
import pytest
from hypothesis import strategies as st

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
    assert 'INFO ccm.test Initializing node n1 node="n1"' in line


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


def test_bound_fields_reach_every_line_and_inner_bindings_win() -> None:
    out = io.StringIO()
    logs.configure("json", 0, stream=out)
    log = logging.getLogger("ccm.test")
    with logs.bind(controller="cloud-node-controller"):
        log.info("outer")
        with logs.bind(node="n1"):
            log.info("inner", extra={"route": "r1"})
        log.info("after")
    log.info("outside")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r.get("controller") for r in records] == [
        "cloud-node-controller",
        "cloud-node-controller",
        "cloud-node-controller",
        None,
    ]
    assert [r.get("node") for r in records] == [None, "n1", None, None]
    assert records[1]["route"] == "r1"


async def test_bound_fields_follow_tasks_created_inside() -> None:
    import asyncio

    out = io.StringIO()
    logs.configure("json", 0, stream=out)

    async def child() -> None:
        await asyncio.sleep(0)
        logging.getLogger("ccm.test").info("from the task")

    with logs.bind(service="ns/a"):
        task = asyncio.create_task(child(), name="test/child")
    await task
    assert json.loads(out.getvalue())["service"] == "ns/a"
    assert logs.fields() == {}


def test_err_field_in_json_and_klog_like_text() -> None:
    out = io.StringIO()
    logs.configure("text", 0, stream=out)
    exc = TimeoutError()
    logging.getLogger("ccm.test").error(
        "sync failed", extra={"service": "ns/a b", **logs.err(RuntimeError('quota "x"'))}
    )
    logging.getLogger("ccm.test").error("timed out", extra=logs.err(exc))
    first, second = out.getvalue().splitlines()
    assert first.endswith('service="ns/a b" err="quota \\"x\\""')
    assert second.endswith('err="TimeoutError"')
    out = io.StringIO()
    logs.configure("json", 0, stream=out)
    try:
        raise ValueError("bad CIDR")
    except ValueError:
        logging.getLogger("ccm.test").exception("failed")
    assert json.loads(out.getvalue())["err"] == "bad CIDR"


def _klog_value_by_json_dumps(val: object) -> str:
    """The reference: every value through ``json.dumps`` (what text lines always showed)."""
    if isinstance(val, bool | int | float) or val is None:
        return json.dumps(val)
    return json.dumps(str(val), ensure_ascii=False)


class _Colour(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


class _Old(str, enum.Enum):  # noqa: UP042 - the str mixin str()s as "_Old.A"
    A = 'a"b'


class _Text(str):
    pass


_VALUES: list[object] = [
    "",
    "n1",
    'say "hi"',
    "back\\slash",
    "tab\tnew\nline\rcr\x00nul\x1f\x7f",
    "ünïcødé 名前 🙂",
    "\u2028\u2029",
    "\ud800 lone surrogate",
    0,
    -1,
    2**70,
    True,
    False,
    None,
    0.5,
    -0.0,
    1e300,
    float("nan"),
    float("inf"),
    float("-inf"),
    _Colour.RED,
    _Level.HIGH,
    _Old.A,
    _Text('sub"class'),
    ValueError('boom: "x"\n'),
    TimeoutError(),
    ["a", 1],
    {"k": "v"},
    ("t",),
    b"bytes",
    object,
]


@pytest.mark.parametrize("val", _VALUES, ids=repr)
def test_klog_values_are_byte_identical_to_json_dumps(val: object) -> None:
    assert logs._klog_value(val) == _klog_value_by_json_dumps(val)


@hypothesis.settings(max_examples=2000, deadline=None)
@hypothesis.given(
    st.one_of(
        st.text(st.characters(codec=None)),
        st.text(st.characters(max_codepoint=0x7F)),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.lists(st.one_of(st.text(), st.integers()), max_size=3),
        st.builds(_Text, st.text()),
        st.builds(RuntimeError, st.text()),
    )
)
def test_klog_values_match_json_dumps_for_any_value(val: object) -> None:
    assert logs._klog_value(val) == _klog_value_by_json_dumps(val)
