"""Logging set-up: one line per event, ``text`` or ``json`` (``--logging-format``), klog-like ``-v``
levels, and structured fields a machine can filter on.

``-v N`` maps onto stdlib levels: V(0) is INFO; V(1) and up are debug-ish levels below INFO
(``INFO - N``), so ``log.log(v(2), ...)`` shows only with ``-v 2`` or more. The levels follow
upstream's use: V(2) for each change made (a finalizer added, a load balancer ensured), V(4) for
per-object progress and timings, V(5) and up for detail on every object seen.

Structured fields: a record's ``extra`` fields, plus those bound to the running code with
:func:`bind` (a context variable, so tasks created inside inherit them). The controllers bind
``controller`` (the upstream controller name) for their whole run and the object key (``node`` or
``service``) for each reconcile, so every line a controller writes carries both; an error is
passed as ``extra=logs.err(exc)`` and becomes the ``err`` field. In JSON each field is a key of
the object; in text they follow the message, klog-like: ``node="n1" err="timed out"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import json.encoder
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

__all__ = ["OBJECT_FIELDS", "bind", "configure", "err", "fields", "shared_context", "v"]

_FIELDS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "ccm_log_fields", default=types.MappingProxyType({})
)

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def v(level: int) -> int:
    """The stdlib level of klog verbosity ``level``."""
    return logging.INFO - max(0, level)


@contextlib.contextmanager
def bind(**bound: Any) -> Iterator[None]:
    """Add ``bound`` to the fields of every line logged in this context (and in the tasks created
    in it); an inner binding of the same key wins until it ends."""
    token = _FIELDS.set({**_FIELDS.get(), **bound})
    try:
        yield
    finally:
        _FIELDS.reset(token)


#: The fields that name the one object a line is about (a work-queue key).
OBJECT_FIELDS = frozenset({"node", "service", "route", "key"})


def shared_context() -> contextvars.Context:
    """A copy of the current context without the :data:`OBJECT_FIELDS`, for a task that works for
    many objects at once (a batch call started by whichever worker came first): its lines keep the
    controller but do not claim to be about that worker's object."""
    context = contextvars.copy_context()
    kept = {k: val for k, val in _FIELDS.get().items() if k not in OBJECT_FIELDS}
    context.run(_FIELDS.set, types.MappingProxyType(kept))
    return context


def fields() -> Mapping[str, Any]:
    """The fields bound in the current context."""
    return _FIELDS.get()


def err(exc: BaseException) -> dict[str, Any]:
    """``extra`` for a line about a failure: the error as the ``err`` field (its message, or its
    type when the message is empty)."""
    return {"err": str(exc) or type(exc).__name__}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out = dict(_FIELDS.get())
    out.update((k, val) for k, val in record.__dict__.items() if k not in _STD_ATTRS)
    return out


# What ``json.dumps(text, ensure_ascii=False)`` returns for a str, without building a JSONEncoder
# on every call (the non-default ensure_ascii does): the quoted string, ``"`` ``\\`` and control
# characters escaped, everything else as is.
_quote = json.encoder.encode_basestring


def _klog_value(val: Any) -> str:
    """A field's value as text lines show it: JSON, a non-JSON value as the JSON string of its
    ``str()``. The common types (str, int, None, bool) skip ``json.dumps``; the text is the same."""
    kind = type(val)
    if kind is str:
        return _quote(val)
    if kind is int:
        return int.__repr__(val)
    if val is None:
        return "null"
    if kind is bool:
        return "true" if val else "false"
    if isinstance(val, bool | int | float):
        return json.dumps(val)
    return _quote(str(val))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        level = (
            record.levelname
            if record.levelno >= logging.INFO
            else f"V{logging.INFO - record.levelno}"
        )
        parts = [f"{ts}.{int(record.msecs):03d}", level, record.name, record.getMessage()]
        line = " ".join(parts)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_klog_value(val)}" for k, val in extras.items())
        if record.exc_info and record.exc_info[1] is not None and "err" not in extras:
            line += " err=" + _klog_value(
                str(record.exc_info[1]) or type(record.exc_info[1]).__name__
            )
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower() if record.levelno >= logging.INFO else "info",
            "v": max(0, logging.INFO - record.levelno) if record.levelno < logging.INFO else 0,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(
            {
                k: v if isinstance(v, int | float | bool | str | None) else str(v)
                for k, v in _extras(record).items()
            }
        )
        if record.exc_info and record.exc_info[1] is not None and "err" not in out:
            exc = record.exc_info[1]
            out["err"] = str(exc) or type(exc).__name__
        return json.dumps(out)


def configure(fmt: str = "text", verbosity: int = 0, stream: TextIO | None = None) -> None:
    """Install one handler on the root logger. ``fmt`` is ``text`` or ``json``."""
    if fmt not in ("text", "json"):
        raise ValueError(f'unknown logging format "{fmt}" (want text or json)')
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(v(verbosity))
    # Third-party libraries stay at WARNING unless asked for a lot of detail.
    for noisy in ("aiohttp", "asyncio", "kubernetes_asyncio", "urllib3", "botocore", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbosity < 8 else logging.DEBUG)
