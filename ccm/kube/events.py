"""Kubernetes Events (core/v1) from controllers: queued, de-duplicated, rate-limited, non-blocking.

Ports the parts of client-go's ``tools/record`` ccm needs (``event.go``, ``events_cache.go``):

* :meth:`EventRecorder.event` builds the event at once and puts it on a bounded queue; it never
  blocks and never raises (a full queue drops the event and logs it). It also logs the event, like
  upstream's ``StartStructuredLogging``.
* :meth:`EventRecorder.run` is the background sender: the owner runs it as a named task of its
  ``TaskGroup``. :meth:`EventRecorder.aclose` stops new events and flushes what is queued, within a
  timeout — through the running sender if there is one, else by itself — then lets ``run`` return.
* Events go to the involved object's namespace, ``default`` for cluster-scoped objects such as
  Nodes; ``involvedObject`` carries kind/namespace/name/uid/apiVersion/resourceVersion and
  ``source.component`` the recorder's component.
* Correlation: an event identical to one sent in the last 10 minutes (same object, type, reason,
  message) PATCHes the existing Event's ``count`` and ``lastTimestamp`` instead of creating one
  (the correlator's ``eventLogger``); if that Event is gone, a new one is created. A per-object
  token bucket (burst 25, one more every 5 minutes) drops event storms (the spam filter). The
  "similar events" aggregation of client-go is not ported.
* Write failures are retried twice for transient errors, then logged; never raised.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ccm import clock, errors, fencing, logs
from ccm.kube import client as kclient
from ccm.kube import ratelimit

__all__ = ["EVENT_TYPE_NORMAL", "EVENT_TYPE_WARNING", "EventRecorder"]

_log = logging.getLogger(__name__)

EVENT_TYPE_NORMAL = "Normal"
EVENT_TYPE_WARNING = "Warning"

MAX_MESSAGE_LENGTH = 1024
DEFAULT_NAMESPACE = "default"

_Key = tuple[str, ...]


@dataclasses.dataclass(slots=True)
class _Pending:
    ref: dict[str, str]
    namespace: str
    event_type: str
    reason: str
    message: str
    timestamp: str

    @property
    def key(self) -> _Key:
        r = self.ref
        return (
            r.get("kind", ""),
            self.namespace,
            r.get("name", ""),
            r.get("uid", ""),
            r.get("apiVersion", ""),
            self.event_type,
            self.reason,
            self.message,
        )

    @property
    def object_key(self) -> _Key:
        r = self.ref
        return (r.get("kind", ""), self.namespace, r.get("name", ""), r.get("uid", ""))


@dataclasses.dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    first_timestamp: str
    last_seen: float  # loop clock


def _reference(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    ref = {
        "kind": str(obj.get("kind") or ""),
        "namespace": str(meta.get("namespace") or ""),
        "name": str(meta.get("name") or ""),
        "uid": str(meta.get("uid") or ""),
        "apiVersion": str(obj.get("apiVersion") or ""),
        "resourceVersion": str(meta.get("resourceVersion") or ""),
    }
    return {k: v for k, v in ref.items() if v}


class EventRecorder:
    """Records core/v1 Events for one component (``source.component``) on one host."""

    def __init__(
        self,
        client: kclient.KubeClient,
        *,
        component: str,
        host: str = "",
        queue_size: int = 1000,
        aggregate_window: float = 600.0,
        spam_burst: int = 25,
        spam_qps: float = 1.0 / 300.0,
        cache_size: int = 4096,
        retry_delay: float = 1.0,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=queue_size)
        self._aggregate_window = aggregate_window
        self._spam_burst = spam_burst
        self._spam_qps = spam_qps
        self._cache_size = cache_size
        self._retry_delay = retry_delay
        self._seen: collections.OrderedDict[_Key, _Seen] = collections.OrderedDict()
        self._spam: collections.OrderedDict[_Key, ratelimit.TokenBucket] = collections.OrderedDict()
        self._closed = False
        self._running = False
        self._last_name_ns = 0
        # Counters, for tests and benchmarks.
        self.created = 0
        self.patched = 0
        self.dropped = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"<EventRecorder {self.component!r} queued={self._queue.qsize()}>"

    # -- producer side -------------------------------------------------------------------------

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queue an event about ``obj``; never blocks, never raises."""
        try:
            ref = _reference(obj)
            self._log_event(ref, event_type, reason, message)
            if self._closed:
                self.dropped += 1
                _log.log(logs.v(2), "Event recorder %s is closed; dropping event", self.component)
                return
            if len(message) > MAX_MESSAGE_LENGTH:
                message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
            pending = _Pending(
                ref=ref,
                namespace=ref.get("namespace") or DEFAULT_NAMESPACE,
                event_type=event_type,
                reason=reason,
                message=message,
                timestamp=clock.now_rfc3339(),
            )
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.dropped += 1
            _log.warning(
                "Event queue of %s is full (%d); dropping event %s %s",
                self.component,
                self._queue.maxsize,
                reason,
                message,
            )
        except Exception:
            self.dropped += 1
            _log.exception("Could not record event %s for %s", reason, self.component)

    @staticmethod
    def _log_event(ref: Mapping[str, str], event_type: str, reason: str, message: str) -> None:
        """Log the event like upstream's ``StartStructuredLogging(0)``; a logging problem must
        not cost the event itself."""
        try:
            name = ref.get("name", "")
            namespace = ref.get("namespace")
            _log.info(
                "Event occurred",
                # Not "message"/"msg": LogRecord owns those names (``extra`` may not set them).
                extra={
                    "object": f"{namespace}/{name}" if namespace else name,
                    "kind": ref.get("kind", ""),
                    "apiVersion": ref.get("apiVersion", ""),
                    "type": event_type,
                    "reason": reason,
                    "note": message,
                },
            )
        except Exception:  # pragma: no cover - a broken handler; the event still goes out
            pass

    def __len__(self) -> int:
        """Events queued and not yet sent."""
        return self._queue.qsize()

    # -- sender side ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Send queued events until cancelled, or until :meth:`aclose` has flushed the queue."""
        if self._running:
            raise RuntimeError(f"event recorder {self.component} is already running")
        self._running = True
        try:
            while True:
                pending = await self._queue.get()
                try:
                    if pending is None:
                        return
                    await self._send(pending)
                finally:
                    self._queue.task_done()
        finally:
            self._running = False

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Stop accepting events and send what is queued, for at most ``timeout`` seconds."""
        self._closed = True
        try:
            if self._running:
                async with asyncio.timeout(timeout):
                    await self._queue.join()
            else:
                async with asyncio.timeout(timeout):
                    while not self._queue.empty():
                        pending = self._queue.get_nowait()
                        try:
                            if pending is not None:
                                await self._send(pending)
                        finally:
                            self._queue.task_done()
        except TimeoutError:
            left = self._queue.qsize()
            self.dropped += left
            _log.warning(
                "Event recorder %s: %d events not sent within %.1fs", self.component, left, timeout
            )
        if self._running:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)  # let run() return

    def _allowed(self, pending: _Pending) -> bool:
        key = pending.object_key
        bucket = self._spam.get(key)
        if bucket is None:
            bucket = ratelimit.TokenBucket(self._spam_qps, self._spam_burst)
            self._spam[key] = bucket
            if len(self._spam) > self._cache_size:
                self._spam.popitem(last=False)
        else:
            self._spam.move_to_end(key)
        return bucket.try_acquire()

    def _event_name(self, object_name: str) -> str:
        # Upstream: "<object name>.<unix nanoseconds in hex>"; kept strictly increasing here.
        ns = max(time.time_ns(), self._last_name_ns + 1)
        self._last_name_ns = ns
        return f"{object_name or 'unknown'}.{ns:x}"

    async def _send(self, pending: _Pending) -> None:
        if not self._allowed(pending):
            self.dropped += 1
            _log.log(
                logs.v(4),
                "Dropping event %s for %s: too many events for this object",
                pending.reason,
                pending.ref.get("name"),
            )
            return
        key = pending.key
        now = clock.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last_seen <= self._aggregate_window:
            seen.count += 1
            seen.last_seen = now
            self._seen.move_to_end(key)
            patch = {"count": seen.count, "lastTimestamp": pending.timestamp}
            try:
                await self._write(
                    lambda: self.client.patch(
                        kclient.EVENTS, seen.name, patch, namespace=seen.namespace, decode=False
                    )
                )
            except errors.NotFoundError:
                pass  # the Event expired on the server (TTL): create a new one below
            except errors.KubeError as exc:
                self.failed += 1
                _log.warning("Could not update event %s/%s: %s", seen.namespace, seen.name, exc)
                return
            else:
                self.patched += 1
                return
        name = self._event_name(pending.ref.get("name", ""))
        source = {"component": self.component}
        if self.host:
            source["host"] = self.host
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": pending.namespace},
            "involvedObject": pending.ref,
            "reason": pending.reason,
            "message": pending.message,
            "type": pending.event_type,
            "source": source,
            "firstTimestamp": pending.timestamp,
            "lastTimestamp": pending.timestamp,
            "count": 1,
            "reportingComponent": self.component,
        }
        if self.host:
            body["reportingInstance"] = self.host
        try:
            await self._write(
                lambda: self.client.create(kclient.EVENTS, body, namespace=pending.namespace)
            )
        except errors.KubeError as exc:
            self.failed += 1
            _log.warning(
                "Could not create event %s for %s %s: %s",
                pending.reason,
                pending.ref.get("kind", ""),
                pending.ref.get("name", ""),
                exc,
            )
            return
        self.created += 1
        self._seen[key] = _Seen(name, pending.namespace, 1, pending.timestamp, now)
        self._seen.move_to_end(key)
        if len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)

    async def _write(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``make()``; retry twice on transient errors (unreachable, 429, 5xx)."""
        attempt = 0
        while True:
            try:
                return await make()
            except errors.ApiError as exc:
                transient = isinstance(exc, errors.ServerError | errors.TooManyRequestsError)
                if not transient or attempt >= 2:
                    raise
            except fencing.NotLeaderError:
                raise  # the lease lapsed: no retry can succeed
            except errors.KubeError:
                if attempt >= 2:
                    raise
            attempt += 1
            await clock.sleep(self._retry_delay * attempt)
