"""The ``Status`` answers of the fake apiserver, and the exception carrying one out of a handler."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from ccm import errors
from ccm.kube import client as kclient

__all__ = [
    "REASONS",
    "Obj",
    "Reply",
    "clone",
    "conflict",
    "error_status",
    "json_response",
    "not_found",
    "qualified",
    "status_body",
]

Obj = dict[str, Any]
_T = TypeVar("_T")

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def clone(obj: _T) -> _T:
    """A deep copy (through JSON, which is what the apiserver stores anyway)."""
    copied: _T = orjson.loads(orjson.dumps(obj))
    return copied


def status_body(code: int, message: str, reason: str | None = None, **details: Any) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class Reply(Exception):
    """Control flow inside the fake: answer the request with this ``Status``."""

    def __init__(self, code: int, message: str, reason: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason, **details)


def qualified(res: kclient.Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def not_found(res: kclient.Resource, name: str) -> Reply:
    return Reply(404, f'{qualified(res)} "{name}" not found', name=name, kind=res.plural)


def conflict(res: kclient.Resource, name: str) -> Reply:
    return Reply(
        409,
        f'Operation cannot be fulfilled on {qualified(res)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        name=name,
        kind=res.plural,
    )


def error_status(error: errors.ApiError) -> tuple[int, Obj]:
    """The HTTP status and ``Status`` body an injected or raised ApiError answers with."""
    code = error.status_code or 500
    body = dict(error.body) if error.body else {}
    body.setdefault("kind", "Status")
    body.setdefault("apiVersion", "v1")
    body.setdefault("status", "Failure")
    body.setdefault("message", error.message or f"injected HTTP {code}")
    body.setdefault("reason", error.reason or REASONS.get(code, ""))
    body.setdefault("code", code)
    return code, body


def json_response(code: int, body: Any) -> kclient.BufferedResponse:
    return kclient.BufferedResponse(code, orjson.dumps(body), {"content-type": "application/json"})
