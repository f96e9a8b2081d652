"""The worker's collector policy (``proxy/collector.py``) on a running loop: survivors
leave the collector's reach, young cycles are freed first, passes are counted."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from onprem_gateway.proxy.collector import GC_THRESHOLDS, Collector
from onprem_gateway.proxy.metrics import ProxyMetrics, merge


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()  # the test process's objects back under the collector
    gc.set_threshold(*before)


async def test_survivors_are_frozen_and_young_cycles_freed(thawed: None) -> None:
    metrics = ProxyMetrics()
    collector = Collector(metrics).start(asyncio.get_running_loop())
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 0

        kept = [Node() for _ in range(1_000)]  # long-lived: like held requests
        a, b = Node(), Node()
        a.other, b.other = b, a  # a garbage cycle, young
        cycle = weakref.ref(a)
        del a, b
        collector.adopt_survivors()

        assert cycle() is None  # collected before the freeze, not frozen for good
        assert gc.get_freeze_count() >= frozen_at_start + len(kept)
        assert metrics.gc_passes >= 1 and metrics.gc_pass_seconds > 0

        # A frozen object is still freed by reference counting.
        gone = weakref.ref(kept[0])
        del kept[0]
        assert gone() is None
    finally:
        collector.stop()
    assert collector._observe not in gc.callbacks
    assert gc.get_threshold() != GC_THRESHOLDS


async def test_the_loop_adopts_survivors_on_its_timer(
    thawed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("onprem_gateway.proxy.collector.ADOPT_EVERY_S", 0.05)
    metrics = ProxyMetrics()
    collector = Collector(metrics).start(asyncio.get_running_loop())
    try:
        before = gc.get_freeze_count()
        kept = [Node() for _ in range(500)]
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        collector.stop()


def test_slow_passes_are_counted_and_the_metrics_add_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = ProxyMetrics()
    collector = Collector(metrics)
    ticks = iter([10.0, 10.001, 20.0, 20.009])
    monkeypatch.setattr("onprem_gateway.proxy.collector.time.perf_counter", lambda: next(ticks))
    for _ in range(2):
        collector._observe("start", {})
        collector._observe("stop", {})
    assert metrics.gc_passes == 2 and metrics.gc_slow_passes == 1
    assert metrics.gc_pass_seconds == pytest.approx(0.010)
    total = merge([metrics.snapshot(), metrics.snapshot()])
    assert total["gc_passes"] == 4 and total["gc_slow_passes"] == 2
