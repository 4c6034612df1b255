"""An informer: a local cache of one resource kept current by LIST + WATCH, with event handlers.

Ports the behaviour of client-go's ``tools/cache`` reflector + shared informer that ccm needs:

* a paged LIST (``limit``/``continue``; 100 per page, not client-go's 500: a page is decoded on
  the one event loop, and 500 kubelet Nodes are ~2.4 MB of JSON, ~30 ms of blocking), then a
  WATCH from the list's resourceVersion with bookmarks; a watch the server ends normally
  (``timeoutSeconds``) is re-opened from the last seen resourceVersion without relisting;
* on 410 Gone, an ERROR event, or a broken watch: back off (0.8 s doubling to 4 s, less up to 25 %
  of jitter; the first 410 after a healthy period relists at once) and relist; the relist is
  diffed against the cache and emits ``on_add`` / ``on_update`` (only when the resourceVersion
  changed) / ``on_delete`` for objects that vanished meanwhile. client-go caps this back-off at
  30 s; ccm caps it at 4 s so that work resumes within seconds of the apiserver coming back after
  a long outage (a leader has two informers: a relist every 4 s costs the apiserver nothing);
* objects are stored after ``transform`` (default :func:`trim_object`: no managedFields, node
  images, or last-applied annotation — the measured bulk of a Node), and list items get their
  ``kind``/``apiVersion`` filled in;
* handlers are synchronous, run on the loop, may be added before or after :meth:`Informer.run`
  (a late handler gets ``on_add`` for every cached object), and their exceptions are logged, never
  propagated;
* optional resync: ``on_update(obj, obj)`` for every cached object every ``resync_period`` seconds.

Cached objects are shared with every handler and caller: never mutate them; compute a patch.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from ccm import clock, errors, logs
from ccm.kube import client as kclient

__all__ = ["LAST_APPLIED_ANNOTATION", "Informer", "object_key", "trim_object"]

#: List items or watch events handled before yielding to the event loop once: a kubelet Node's
#: watch event costs ~0.1-0.3 ms to decode, trim and dispatch, so 100 at a time held the loop for
#: 30-60 ms steps during a 20,000-Node initialization (timed per loop callback).
_DISPATCH_SLICE = 25

_log = logging.getLogger(__name__)

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

Obj = dict[str, Any]


def object_key(obj: Mapping[str, Any]) -> str:
    """The cache key: ``namespace/name``, or ``name`` for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    namespace = meta.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def trim_object(obj: Obj) -> Obj:
    """Drop what controllers never read: ``metadata.managedFields``, ``status.images`` and the
    ``kubectl.kubernetes.io/last-applied-configuration`` annotation.

    Returns ``obj`` itself when there is nothing to drop, else a shallow copy (``obj`` is left
    untouched).
    """
    meta = obj.get("metadata")
    status = obj.get("status")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    drop_fields = isinstance(meta, dict) and "managedFields" in meta
    drop_annotation = isinstance(annotations, dict) and LAST_APPLIED_ANNOTATION in annotations
    drop_images = isinstance(status, dict) and "images" in status
    if not (drop_fields or drop_annotation or drop_images):
        return obj
    out = dict(obj)
    if drop_fields or drop_annotation:
        assert isinstance(meta, dict)
        new_meta = dict(meta)
        new_meta.pop("managedFields", None)
        if drop_annotation:
            assert isinstance(annotations, dict)
            new_meta["annotations"] = {
                k: v for k, v in annotations.items() if k != LAST_APPLIED_ANNOTATION
            }
        out["metadata"] = new_meta
    if drop_images:
        assert isinstance(status, dict)
        out["status"] = {k: v for k, v in status.items() if k != "images"}
    return out


def _rv_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclasses.dataclass(slots=True)
class _Handler:
    on_add: Callable[[Obj], None] | None
    on_update: Callable[[Obj, Obj], None] | None
    on_delete: Callable[[Obj], None] | None


class Informer:
    """A cache of one resource (optionally one namespace / selector) and its change handlers."""

    def __init__(
        self,
        client: kclient.KubeClient,
        resource: kclient.Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Callable[[Obj], Obj] | None = trim_object,
        page_size: int = 100,
        resync_period: float | None = None,
        name: str | None = None,
        watch_timeout: float = 300.0,
        backoff_initial: float = 0.8,
        backoff_max: float = 4.0,
        backoff_reset: float = 120.0,
        backoff_jitter: float = 0.25,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.name = name or resource.plural
        self._transform = transform
        self._page_size = page_size
        self._resync_period = resync_period
        self._watch_timeout = watch_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff_reset = backoff_reset
        self._backoff_jitter = backoff_jitter
        self._store: dict[str, Obj] = {}
        self._handlers: list[_Handler] = []
        self._synced = False
        self._synced_event = asyncio.Event()
        self._rv = ""
        self._running = False
        self._resync_handle: asyncio.TimerHandle | None = None
        self._revision = 0
        # Counters, for tests and benchmarks.
        self.list_count = 0
        self.watch_count = 0
        self.event_count = 0

    def __repr__(self) -> str:
        return f"<Informer {self.name!r} objects={len(self._store)} synced={self._synced}>"

    # -- handlers ------------------------------------------------------------------------------

    def add_handler(
        self,
        *,
        on_add: Callable[[Obj], None] | None = None,
        on_update: Callable[[Obj, Obj], None] | None = None,
        on_delete: Callable[[Obj], None] | None = None,
    ) -> None:
        """Register synchronous callbacks; a handler added late gets on_add for cached objects."""
        handler = _Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if on_add is not None:
            for obj in list(self._store.values()):
                self._call(handler, "on_add", obj)

    def _call(self, handler: _Handler, kind: str, *args: Obj) -> None:
        fn: Callable[..., None] | None = getattr(handler, kind)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            _log.exception(
                "Informer %s: %s handler failed for %s", self.name, kind, object_key(args[-1])
            )

    def _dispatch(self, kind: str, *args: Obj) -> None:
        for handler in list(self._handlers):
            self._call(handler, kind, *args)

    # -- cache ---------------------------------------------------------------------------------

    def has_synced(self) -> bool:
        """True once the first LIST has been stored and its events dispatched."""
        return self._synced

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        if self._synced:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._synced_event.wait()
        except TimeoutError:
            return False
        return True

    def get(self, key: str) -> Obj | None:
        """The cached object under ``key`` (``ns/name`` or ``name``); do not mutate it."""
        return self._store.get(key)

    def list(self) -> builtins.list[Obj]:
        """Every cached object; do not mutate them."""
        return list(self._store.values())

    def keys(self) -> builtins.list[str]:
        return list(self._store)

    def __len__(self) -> int:
        return len(self._store)

    @property
    def revision(self) -> int:
        """A number that grows whenever the cache changes (a relist, an added, updated or
        deleted object): what a reader keys a value derived from the whole cache on, to compute
        it again only after a change."""
        return self._revision

    @property
    def last_resource_version(self) -> str:
        """The resourceVersion the next watch starts from."""
        return self._rv

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch, relisting after errors, until cancelled."""
        if self._running:
            raise RuntimeError(f"informer {self.name} is already running")
        self._running = True
        failures = 0
        if self._resync_period:
            self._resync_handle = asyncio.get_running_loop().call_later(
                self._resync_period, self._resync
            )
        try:
            while True:
                cycle_start = clock.monotonic()
                try:
                    await self._list()
                    while True:
                        await self._watch_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if clock.monotonic() - cycle_start >= self._backoff_reset:
                        failures = 0
                    failures += 1
                    delay = self._delay(exc, failures)
                    if isinstance(exc, errors.GoneError):
                        _log.log(
                            logs.v(2),
                            "Informer %s: %s; relisting in %.1fs",
                            self.name,
                            exc,
                            delay,
                        )
                    else:
                        _log.warning(
                            "Informer %s: list/watch of %s failed: %s; relisting in %.1fs",
                            self.name,
                            self.resource.plural,
                            exc,
                            delay,
                        )
                    await clock.sleep(delay)
        finally:
            self._running = False
            if self._resync_handle is not None:
                self._resync_handle.cancel()
                self._resync_handle = None

    def _delay(self, exc: Exception, failures: int) -> float:
        if isinstance(exc, errors.GoneError) and failures == 1:
            return 0.0  # expected after compaction: relist at once
        base = min(self._backoff_max, self._backoff_initial * 2.0 ** min(failures - 1, 30))
        # Jitter only shortens the delay, so ``backoff_max`` bounds every wait.
        return float(base * (1.0 - self._backoff_jitter * random.random()))

    def _prepare(self, obj: Obj) -> Obj:
        return self._transform(obj) if self._transform is not None else obj

    async def _list(self) -> None:
        items, rv = await self.client.list_all(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            page_size=self._page_size,
            transform=self._prepare,
        )
        self.list_count += 1
        old_store = self._store
        new_store = {object_key(obj): obj for obj in items}
        self._store = new_store
        self._revision += 1
        self._rv = rv
        for i, (key, obj) in enumerate(new_store.items(), 1):
            old = old_store.get(key)
            if old is None:
                self._dispatch("on_add", obj)
            elif _rv_of(old) != _rv_of(obj):
                self._dispatch("on_update", old, obj)
            if i % _DISPATCH_SLICE == 0:
                await asyncio.sleep(0)  # let the rest of the loop run between slices
        for key, old in old_store.items():
            if key not in new_store:
                self._dispatch("on_delete", old)
        if not self._synced:
            self._synced = True
            self._synced_event.set()
            _log.log(logs.v(2), "Informer %s synced with %d objects", self.name, len(new_store))

    async def _watch_once(self) -> None:
        # client-go spreads watch timeouts over [min, 2*min) so watches do not expire together.
        timeout = int(self._watch_timeout * (1.0 + random.random()))
        started = clock.monotonic()
        received = 0
        self.watch_count += 1
        watch = self.client.watch(
            self.resource,
            resource_version=self._rv,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=max(1, timeout),
            allow_bookmarks=True,
        )
        async with contextlib.aclosing(watch) as events:
            async for event in events:
                received += 1
                self._apply(event)
                if received % _DISPATCH_SLICE == 0:
                    # Events that arrived together are read from a buffer without suspending:
                    # let the rest of the loop run between slices of them.
                    await asyncio.sleep(0)
        if received == 0 and clock.monotonic() - started < 1.0:
            # A watch that ends at once with nothing in it would make a hot loop: back off.
            raise errors.KubeError(f"watch of {self.resource.plural} closed immediately")

    def _apply(self, event: Mapping[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        rv = _rv_of(obj)
        if etype == "BOOKMARK":
            if rv:
                self._rv = rv
            return
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            _log.warning("Informer %s: ignoring watch event of type %r", self.name, etype)
            return
        self.event_count += 1
        obj.setdefault("kind", self.resource.kind)
        obj.setdefault("apiVersion", self.resource.api_version)
        obj = self._prepare(obj)
        key = object_key(obj)
        self._revision += 1
        if etype == "DELETED":
            self._store.pop(key, None)
            self._dispatch("on_delete", obj)
        else:
            old = self._store.get(key)
            self._store[key] = obj
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
        if rv:
            self._rv = rv

    def _resync(self) -> None:
        try:
            if self._synced:
                for obj in list(self._store.values()):
                    self._dispatch("on_update", obj, obj)
        finally:
            if self._running and self._resync_period:
                self._resync_handle = asyncio.get_running_loop().call_later(
                    self._resync_period, self._resync
                )
