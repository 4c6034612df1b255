"""Event-loop lag: how late a timer fires on the daemon's one event loop.

Every controller, informer, the HTTPS server and leader election share one asyncio loop, so a
long synchronous step anywhere (decoding a large list, a CPU-heavy provider call) delays all of
them: Lease renewals, /healthz answers and work-queue hand-offs. :class:`LagMonitor` sleeps
``interval`` seconds at a time and records how much later than asked it woke up in the
``ccm_event_loop_lag_seconds`` histogram; a lag above ``warn_after`` is also logged.

One source of lag is the cyclic garbage collector: a full collection walks every tracked object,
and the informer caches of a large cluster are most of them (5,000 Nodes + 5,000 Services: ~30 ms
per full collection on an idle core, more under load). :func:`freeze_after_sync` moves what exists
once the caches are filled into the collector's permanent generation (``gc.freeze()``), so later
collections skip it. Cached objects are plain JSON dicts without reference cycles: replaced ones
are still freed by reference counting. It then raises the youngest generation's threshold from
700 to :data:`GEN0_THRESHOLD` container allocations: decoding one kubelet Node allocates a few
hundred dicts and lists, so at 700 a young collection ran every few watch events or responses and
dragged older generations after it. Young garbage in a reference cycle waits for at most that
many allocations. Measured with ``gc.callbacks`` over a whole 1,000-Node initialisation: 0.27 s
of collections before, 0.21 s after (the rest is at start-up, before the caches are synced).

The daemon therefore raises the threshold as it starts (:func:`raise_gen0_threshold`, called by
``ccm.app.main.run``), so start-up, the initial LISTs and the first Nodes' writes run with it too:
1,000 Nodes initialised over the in-memory apiserver, daemon imports included, spent 0.14 s in
collections with the raise at sync, 0.04-0.06 s with it at start, at the same peak RSS (105 MiB).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Iterable

from ccm import logs, metrics

__all__ = ["GEN0_THRESHOLD", "LagMonitor", "freeze_after_sync", "raise_gen0_threshold"]

#: The youngest generation's collection threshold once the caches are synced (CPython: 700).
GEN0_THRESHOLD = 10_000

_log = logging.getLogger(__name__)


class LagMonitor:
    """Samples the loop's lag every ``interval`` seconds until cancelled."""

    def __init__(
        self,
        *,
        interval: float = 0.1,
        warn_after: float = 1.0,
        clock: Callable[[], float] | None = None,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.warn_after = warn_after
        self._clock = clock
        self._observe = observe or metrics.EVENT_LOOP_LAG.observe
        self.samples = 0
        self.max_lag = 0.0

    def sample(self, lag: float) -> None:
        """Record one measured lag (negative clock jitter counts as 0)."""
        lag = max(0.0, lag)
        self.samples += 1
        self.max_lag = max(self.max_lag, lag)
        self._observe(lag)
        if lag >= self.warn_after:
            _log.warning("Event loop was blocked for %.2fs", lag)
        elif lag >= self.interval:
            _log.log(logs.v(4), "Event loop lag %.3fs", lag)

    async def run(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            due = clock() + self.interval
            await asyncio.sleep(self.interval)
            self.sample(clock() - due)


def raise_gen0_threshold() -> None:
    """Raise the youngest generation's collection threshold to at least :data:`GEN0_THRESHOLD`
    (a threshold of 0, collection switched off by whoever embeds us, is kept)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < GEN0_THRESHOLD:
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


async def freeze_after_sync(synced: Iterable[Awaitable[object]]) -> int:
    """Wait for ``synced`` (the informers' ``wait_for_sync()``), then freeze every object that
    exists out of later collections and raise the youngest generation's threshold to at least
    :data:`GEN0_THRESHOLD`. Returns the number of frozen objects."""
    await asyncio.gather(*synced)
    gc.freeze()  # no gc.collect() first: a full collection of a large cache is itself a pause
    raise_gen0_threshold()
    frozen = gc.get_freeze_count()
    _log.log(logs.v(2), "Informer caches synced; %d objects moved out of the cyclic GC", frozen)
    return frozen
