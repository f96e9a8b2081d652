"""How a node worker's cyclic garbage collector runs: in short passes only.

CPython's cyclic collector walks every object of the generations it collects. A worker
holding thousands of Pings keeps ~40 tracked objects alive per Ping for up to an hour;
left to itself the collector walks them again and again: with young passes every 50,000
allocations and nothing frozen after start, a worker's passes took up to 9.5-13 ms of CPU
while 4,000 Pings opened (``bench/held_pings.py``, "GC CPU max").

What a worker does instead (``Collector``):

- at start, everything that exists (modules, the loaded policy) is frozen
  (``gc.freeze``): moved to the permanent generation, which no pass walks;
- young passes run less often than CPython's default (``GC_THRESHOLDS``): most objects
  of a request die by reference counting long before a pass would look at them;
- every ``ADOPT_EVERY_S`` the young generations are collected (``gc.collect(1)``) and
  every survivor is frozen: objects that lived that long (held requests, idle
  connections, the pooled upstream connections, a new policy) leave the collector's
  reach, so a pass only ever walks what was born since. A pass stays short however many
  Pings are held.

What makes this safe: an object that is frozen is still freed by reference counting the
moment its last reference goes, so only a reference *cycle* among frozen objects would
stay in memory. The proxy's objects form none once a request, a client connection or an
upstream connection ends (``tests/integration/gateway_proxy/test_reference_cycles.py``
proves it for both event loops), and garbage cycles are collected before each freeze.
There is no gauge of the frozen set's size: ``gc.get_freeze_count`` walks the whole
set (millions of objects with 50,000 held Pings), which would be the stall this module
exists to avoid.

Each pass is timed through ``gc.callbacks``; the metrics count passes, their time and
those over ``SLOW_PASS_S``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from onprem_gateway.proxy.metrics import ProxyMetrics

# Allocations (net) between two young passes, then young passes per middle one, then
# middle passes per full one (CPython: 700, 10, 10). The full passes only walk what was
# born since the last freeze.
GC_THRESHOLDS = (10_000, 10, 100)

# How often survivors are frozen: a pass walks at most this long's survivors (at 500 new
# Pings a second per worker, ~20,000 objects: ~1-2 ms).
ADOPT_EVERY_S = 0.2

# A pass longer than this is counted as slow (``seg_gateway_gc_slow_passes``).
SLOW_PASS_S = 0.005


class Collector:
    """The worker's collector policy; ``start`` once the server is serving, ``stop`` at
    exit."""

    __slots__ = ("_metrics", "_previous_thresholds", "_started_at", "_timer")

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics
        self._started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._previous_thresholds = gc.get_threshold()

    def start(self, loop: asyncio.AbstractEventLoop) -> Collector:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        gc.callbacks.append(self._observe)
        self._timer = loop.call_later(ADOPT_EVERY_S, self._adopt, loop)
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)
        gc.set_threshold(*self._previous_thresholds)

    def adopt_survivors(self) -> None:
        """Collect the young generations, then freeze what survived."""
        gc.collect(1)
        gc.freeze()  # O(1): the generations' lists are spliced onto the permanent one

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(ADOPT_EVERY_S, self._adopt, loop)
        self.adopt_survivors()

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
            return
        took = time.perf_counter() - self._started_at
        metrics = self._metrics
        metrics.gc_passes += 1
        metrics.gc_pass_seconds += took
        if took > SLOW_PASS_S:
            metrics.gc_slow_passes += 1
