"""What crosses the wire besides objects: query strings, error bodies, ``Retry-After``, watch
lines, paged lists, and the answers a dry run gives instead of writing.

Ports client-go's error translation (``k8s.io/apimachinery/pkg/api/errors``), its watch decoder and
``tools/pager``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ccm import dryrun, errors
from ccm.kube.resources import Resource
from ccm.kube.transport import HttpResponse

if TYPE_CHECKING:
    from ccm.kube.client import KubeClient

__all__ = [
    "PATCH_CONTENT_TYPES",
    "VERBS",
    "WRITE_VERBS",
    "PatchType",
    "api_error_from_body",
    "decode_event",
    "dry_run_answer",
    "dry_run_applies",
    "paged_list",
    "query",
    "retry_after",
    "watch_events",
]

_log = logging.getLogger("ccm.kube.client")


PatchType = Literal["strategic", "merge", "json", "apply"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML; the apiserver accepts it as is
}

#: The Accept header of a write whose answer nobody reads: the apiserver encodes (and sends) only
#: the object's metadata, not a whole kubelet Node; an apiserver that cannot still answers JSON.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"


def api_error_from_body(status: int, body: bytes) -> errors.ApiError:
    """The ApiError for an HTTP error status and its raw body (a ``Status`` object, or not)."""
    decoded: Any = None
    if body:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return errors.api_error_for_status(status, decoded)
    text = body.decode("utf-8", errors="replace").strip()[:512] if body else ""
    return errors.api_error_for_status(
        status, {"message": text or f"apiserver returned HTTP {status}", "code": status}
    )


def retry_after(resp: HttpResponse) -> float | None:
    if resp.status != 429 and resp.status < 500:
        return None
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def query(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out.extend((key, _query_value(v)) for v in value)
        else:
            out.append((key, _query_value(value)))
    return out


VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})

#: Creates that persist nothing (reviews asked by the secure server, token requests): a dry run
#: still sends them.
_NON_PERSISTING = re.compile(
    r"/(tokenreviews|subjectaccessreviews|selfsubjectaccessreviews|localsubjectaccessreviews"
    r"|serviceaccounts/[^/]+/token)$"
)
_API_PREFIX = re.compile(r"^/api/v1/|^/apis/[^/]+/[^/]+/")


def dry_run_applies(verb: str, method: str, path: str) -> bool:
    if verb not in WRITE_VERBS or not dryrun.active():
        return False
    return not (method == "POST" and _NON_PERSISTING.search(path))


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): the answer a dry-run patch gives, close enough for a strategic
    merge patch too (lists are replaced instead of merged by key; its ``$`` directives, such as a
    list's ``$patch: replace`` element, are left out of the answer)."""
    if isinstance(patch, list):
        return [v for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def decode_event(line: bytes, path: str) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise errors.KubeError(f"watch {path}: malformed event: {exc}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise errors.KubeError(f"watch {path}: malformed event (no object)")
    if event.get("type") == "ERROR":
        status = event["object"]
        code = status.get("code")
        raise errors.api_error_for_status(int(code) if isinstance(code, int) else 500, status)
    return event


async def paged_list(
    client: KubeClient,
    res: Resource,
    *,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    page_size: int = 500,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """List every item page by page (see :meth:`ccm.kube.client.KubeClient.list_all`)."""
    limit: int | None = page_size if page_size and page_size > 0 else None
    while True:
        items: list[dict[str, Any]] = []
        token: str | None = None
        try:
            while True:
                page = await client.list(
                    res,
                    namespace=namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=limit,
                    continue_token=token,
                )
                for item in page.get("items") or ():
                    item.setdefault("kind", res.kind)
                    item.setdefault("apiVersion", res.api_version)
                    items.append(transform(item) if transform is not None else item)
                meta = page.get("metadata") or {}
                token = meta.get("continue") or None
                if token is None:
                    return items, str(meta.get("resourceVersion") or "")
        except errors.GoneError:
            if token is None or limit is None:
                raise
            # The continue token expired (etcd compacted its snapshot): list in one go instead.
            _log.info("Continue token for %s expired; listing without pagination", res.plural)
            limit = None


async def watch_events(
    chunks: AsyncGenerator[bytes, None], path: str
) -> AsyncGenerator[dict[str, Any], None]:
    """The events of a watch body: one JSON object a line, in chunks cut anywhere."""
    async with contextlib.aclosing(chunks):
        pending = bytearray()
        async for chunk in chunks:
            search_from = len(pending)
            pending += chunk
            start = 0
            while (newline := pending.find(b"\n", search_from)) != -1:
                line = bytes(pending[start:newline])
                start = search_from = newline + 1
                if line.strip():
                    yield decode_event(line, path)
            if start:
                del pending[:start]
        if bytes(pending).strip():
            yield decode_event(bytes(pending), path)


async def dry_run_answer(
    verb: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    read: Callable[[], Awaitable[bytes]],
) -> bytes:
    """Log and count a write the dry run does not send; answer it as the apiserver would have: a
    create or update with the object sent, a delete with nothing, a patch with the object read
    afresh (``read``) and the patch applied to it (a missing object raises NotFoundError, as the
    real patch would)."""
    target = _API_PREFIX.sub("", path)
    text = body.decode("utf-8", errors="replace") if body else ""
    dryrun.would_write(verb, target, body=text[:2000])
    if verb == "delete":
        return b""
    if verb in ("create", "update"):
        return body or b"{}"
    current = orjson.loads(await read() or b"{}")
    if content_type in (PATCH_CONTENT_TYPES["merge"], PATCH_CONTENT_TYPES["strategic"]):
        with contextlib.suppress(orjson.JSONDecodeError):
            current = _merge(current, orjson.loads(body or b"{}"))
    return orjson.dumps(current)
