"""Logging set-up: one line per event, ``text`` or ``json`` (``--logging-format``), klog-like ``-v``
levels.

``-v N`` maps onto stdlib levels: V(0) is INFO; V(1) and up are debug-ish levels below INFO
(``INFO - N``), so ``log.log(v(2), ...)`` shows only with ``-v 2`` or more.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

__all__ = ["configure", "v"]

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def v(level: int) -> int:
    """The stdlib level of klog verbosity ``level``."""
    return logging.INFO - max(0, level)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: val for k, val in record.__dict__.items() if k not in _STD_ATTRS}


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
            line += " " + " ".join(
                f"{k}={val!r}" if isinstance(val, str) and " " in val else f"{k}={val}"
                for k, val in extras.items()
            )
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " error=" + repr(str(record.exc_info[1]))
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
        if record.exc_info and record.exc_info[1] is not None:
            out["err"] = str(record.exc_info[1])
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
