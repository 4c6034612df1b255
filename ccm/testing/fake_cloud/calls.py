"""The fake cloud's calls: every method's prologue (reload, record, throttle, delay, hook,
injected error), the recorded calls and the lifecycle."""

from __future__ import annotations

import collections
import inspect

from ccm import clock
from ccm.cloudprovider import InitContext
from ccm.errors import RetryAfterError
from ccm.testing.fake_cloud.faults import _sleep_ignoring_cancellation
from ccm.testing.fake_cloud.files import FakeCloudFiles
from ccm.testing.fake_cloud.methods import _WILDCARD, CLOUD_METHODS
from ccm.testing.fake_cloud.model import FakeCall


class FakeCloudCalls(FakeCloudFiles):
    """Recorded calls, the prologue of every call, and the lifecycle of :class:`FakeCloud`."""

    # ---- recorded calls

    @property
    def calls(self) -> list[FakeCall]:
        """The recorded ``(method, key)`` calls in order (a copy; empty unless ``record_calls``)."""
        return list(self._calls)

    def call_count(self, method: str | None = None, key: str | None = None) -> int:
        """Calls of ``method`` (all methods when None), optionally only those with ``key``."""
        if method is None:
            return self.total_calls
        if key is None:
            return self.call_counts[method]
        by_key = self._calls_by_key.get(method)
        return by_key[key] if by_key else 0

    def clear_calls(self) -> None:
        """Forget every recorded call and reset the counters."""
        self._calls.clear()
        self.call_counts.clear()
        self._calls_by_key.clear()
        self.total_calls = 0
        self.batch_items.clear()

    def _record(self, method: str, key: str) -> FakeCall:
        call = FakeCall(method, key)
        if self.record_calls:
            self._calls.append(call)
        self.call_counts[method] += 1
        by_key = self._calls_by_key.get(method)
        if by_key is None:
            by_key = self._calls_by_key[method] = collections.Counter()
        by_key[key] += 1
        self.total_calls += 1
        return call

    async def _call(self, method: str, key: str, *identifiers: str) -> None:
        """The prologue of every method: reload, record, throttle, delay, hook, injected error."""
        self._active = True
        self._reload_state(strict=False)
        self._sync_shared()
        call = self._record(method, key)
        self._status_changed()
        cloud_call = method in CLOUD_METHODS
        if cloud_call and self._bucket is not None:
            if self._reject:
                hint = self._bucket.take(clock.monotonic())
                if hint > 0:
                    await clock.sleep(0)  # an answer, even a refusal, suspends like real I/O
                    raise RetryAfterError(
                        f"429 Too Many Requests: {method} exceeds {self._bucket.qps:g} calls/s",
                        hint,
                    )
            else:
                wait = self._bucket.reserve(clock.monotonic())
                if wait > 0:
                    await clock.sleep(wait)
        delay = self.latency.get(method)
        if delay is None and cloud_call:
            delay = self.latency.get(_WILDCARD)
        if delay and (
            method in self.ignore_cancellation
            or (cloud_call and _WILDCARD in self.ignore_cancellation)
        ):
            await _sleep_ignoring_cancellation(delay)
        else:
            await clock.sleep(delay or 0.0)  # a real call always suspends at least once
        if self.call_hook is not None:
            result = self.call_hook(call)
            if inspect.isawaitable(result):
                await result
        if self.errors:
            keys = {key, *identifiers}
            keys.discard("")
            for rule in self.errors:
                if rule.matches(method, keys):
                    if rule.times is not None:
                        rule.times -= 1
                    rule.fired += 1
                    raise rule.build()
        self._sync_shared()  # the work that follows (no await) changes the current cloud

    # ---- lifecycle

    async def initialize(self, context: InitContext) -> None:
        if self.restore_from_status and not self._active:
            # Before the first call writes the status file (at once with statusInterval 0).
            self._restore_from_status()
        await self._call("initialize", context.cluster_name)
        self.initialized = True
        self.init_context = context
        self.initialized_cluster_name = context.cluster_name
        self._status_changed(urgent=True)

    async def aclose(self) -> None:
        try:
            await self._call("aclose", "")
        finally:
            self.closed = True
            if self._status_handle is not None:
                self._status_handle.cancel()
                self._status_handle = None
            if self.initialized or self._status_dirty:
                self._write_status()
