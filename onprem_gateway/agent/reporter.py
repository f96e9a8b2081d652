"""Access events: buffered in memory, batched to the control plane, spooled while it is
unreachable, and never lost across a restart.

``EventBuffer`` is the ``EventSink`` the data path records into: an in-memory list (an
append on the request path; handing each event to a thread or a queue costs ~6x more,
TOOLCHAIN.md). ``Reporter.run`` wakes every ``flush_interval_s`` or as soon as a full
batch (500 events, the contract's maximum) is waiting, and then:

1. cuts the buffer into batches; while the spool is empty and the control plane is up,
   POSTs each batch; when a POST fails, that batch and every later one go to the spool
   (so the order of delivery is the order of recording);
2. drains the spool oldest-first whenever the control plane is deemed up again, i.e.
   after a backoff delay following the last failure.

A batch the control plane refuses for good (a 4xx other than 401/403/408/429) is dropped
and counted instead of blocking the spool forever. Re-sending is harmless: the control
plane de-duplicates by event id. Shutdown (``close``) makes one last attempt within a
deadline and spools whatever is left, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from onprem_gateway.agent.cloud import SendResult
from onprem_gateway.agent.spool import Spool
from seg_contract import AccessEvent, AccessEventBatch

log = logging.getLogger(__name__)

BATCH_SIZE = 500  # AccessEventBatch.events max_length


class EventSender(Protocol):
    async def post_events(self, batch_json: bytes) -> SendResult: ...


class EventBuffer:
    """The ``EventSink``: never blocks, never raises. Bounded: if the reporter cannot keep
    up (it always can, unless the disk is gone), the oldest events are dropped and
    counted rather than growing without limit."""

    def __init__(self, max_events: int = 200_000) -> None:
        self._events: list[AccessEvent] = []
        self._max_events = max_events
        self._full: asyncio.Event | None = None
        self.recorded = 0
        self.dropped = 0

    def record(self, event: AccessEvent) -> None:
        self._events.append(event)
        self.recorded += 1
        if len(self._events) >= BATCH_SIZE and self._full is not None:
            self._full.set()
        if len(self._events) > self._max_events:
            excess = len(self._events) - self._max_events
            del self._events[:excess]
            self.dropped += excess

    def __len__(self) -> int:
        return len(self._events)

    def take_all(self) -> list[AccessEvent]:
        events, self._events = self._events, []
        return events

    def full_event(self) -> asyncio.Event:
        if self._full is None:
            self._full = asyncio.Event()
        return self._full


def batches(node_id: str, events: list[AccessEvent]) -> Iterator[tuple[bytes, int]]:
    for start in range(0, len(events), BATCH_SIZE):
        chunk = tuple(events[start : start + BATCH_SIZE])
        yield AccessEventBatch(node_id=node_id, events=chunk).model_dump_json().encode(), len(chunk)


class Reporter:
    def __init__(
        self,
        buffer: EventBuffer,
        spool: Spool,
        sender: EventSender | None,
        *,
        node_id: str,
        flush_interval_s: float,
        retry_delays: Callable[[], Iterator[float]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer = buffer
        self.spool = spool
        self._sender = sender
        self._node_id = node_id
        self._flush_interval_s = flush_interval_s
        self._retry_delays = retry_delays
        self._delays: Iterator[float] | None = None
        self._clock = clock
        self._retry_at = 0.0
        self.sent_events = 0
        self.sent_batches = 0
        self.rejected_events = 0
        self.failed_posts = 0
        self.cloud_up = sender is not None

    @property
    def spool_depth(self) -> int:
        return self.spool.depth_events

    async def run(self) -> None:
        full = self.buffer.full_event()
        while True:
            try:
                await asyncio.wait_for(full.wait(), self._flush_interval_s)
            except TimeoutError:
                pass
            full.clear()
            await self.flush_once()

    async def flush_once(self) -> None:
        events = self.buffer.take_all()
        for payload, count in batches(self._node_id, events) if events else ():
            await self._deliver(payload, count)
        await self._drain()

    async def _post(self, payload: bytes, count: int) -> SendResult:
        assert self._sender is not None
        result = await self._sender.post_events(payload)
        if result is SendResult.DELIVERED:
            self.sent_events += count
            self.sent_batches += 1
            self._mark_up()
        elif result is SendResult.REJECTED:
            self.rejected_events += count
        else:
            self.failed_posts += 1
            self._mark_down()
        return result

    async def _deliver(self, payload: bytes, count: int) -> None:
        if self._sender is not None and self.cloud_up and not self.spool:
            if await self._post(payload, count) is not SendResult.FAILED:
                return
        await asyncio.to_thread(self.spool.append, payload, count)

    async def _drain(self, max_batches: int = 50) -> None:
        """Send spooled batches oldest-first; a bounded number per wake-up so the buffer
        is served too."""
        if self._sender is None or not self.spool:
            return
        if not self.cloud_up and self._clock() < self._retry_at:
            return
        for _ in range(max_batches):
            payload = await asyncio.to_thread(self.spool.peek)
            if payload is None:
                return
            result = await self._post(payload, _count(payload))
            if result is SendResult.FAILED:
                return
            await asyncio.to_thread(self.spool.ack)

    def _mark_down(self) -> None:
        if self._delays is None:
            self._delays = self._retry_delays()
        self.cloud_up = False
        self._retry_at = self._clock() + next(self._delays)

    def _mark_up(self) -> None:
        if not self.cloud_up:
            log.info("control plane accepts access events again")
        self.cloud_up = True
        self._delays = None

    async def close(self, deadline_s: float) -> None:
        """Final flush at shutdown: deliver what can be delivered within ``deadline_s``,
        spool the rest."""
        events = self.buffer.take_all()
        pending = list(batches(self._node_id, events)) if events else []
        try:
            async with asyncio.timeout(deadline_s):
                while pending:
                    payload, count = pending[0]
                    await self._deliver(payload, count)
                    pending.pop(0)
                await self._drain()
        except TimeoutError:
            log.warning("shutdown deadline reached; spooling %d batches", len(pending))
        for payload, count in pending:
            self.spool.append(payload, count)
        self.spool.close()


def _count(payload: bytes) -> int:
    return payload.count(b'"event_id"')
