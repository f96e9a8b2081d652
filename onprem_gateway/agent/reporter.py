"""Access events: buffered in memory, committed to the disk spool within the flush window,
sent to the control plane from the spool, and acknowledged only once it accepted them.

``EventBuffer`` is the ``EventSink`` the data path records into: an in-memory list (an
append on the request path; handing each event to a thread or a queue costs ~6x more,
TOOLCHAIN.md). The ``Reporter`` runs two tasks:

- the *committer* wakes every ``flush_interval_s`` (or as soon as a full batch of 500
  events, the contract's maximum, is waiting), cuts the buffer into batches and appends
  them to the spool with one fsync (group commit), in a thread. From then on the events
  survive a crash, a SIGKILL or a power loss, whatever the control plane does;
- the *sender* POSTs spooled batches oldest-first and acknowledges each in the spool
  only after the control plane accepted it (2xx). A failure (network, timeout, 5xx, a
  401/403) backs off and retries the same batch; a batch the control plane refuses for
  good (another 4xx) is dropped and counted instead of blocking the spool forever.

Durability window: an event recorded by a worker process reaches the agent with the
worker's next flush (``event_flush_interval_s``), and the spool with the agent's next
commit (the same interval) plus one fsync: about 2 x 0.2 s + a few ms by default, and
one interval less in in-process mode. A node killed inside that window loses at most the
events of that window; a node killed later loses nothing.

Re-sending is harmless: a batch goes out byte for byte as it was spooled, and the
control plane de-duplicates events by id (and counts a batch once by its fingerprint),
so an accepted batch whose acknowledgement the node did not live to write is sent again
without effect. Shutdown (``close``) commits what is left and makes one last delivery
attempt within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
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
            self._trim()

    def _trim(self) -> None:
        excess = len(self._events) - self._max_events
        del self._events[:excess]
        self.dropped += excess

    def __len__(self) -> int:
        return len(self._events)

    def take_all(self) -> list[AccessEvent]:
        events, self._events = self._events, []
        return events

    def put_back(self, events: list[AccessEvent]) -> None:
        """Events ``take_all`` returned that could not be spooled: first in line again."""
        self._events[:0] = events
        if len(self._events) > self._max_events:
            self._trim()

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
        self._spooled = asyncio.Event()
        self.spooled_events = 0
        self.spool_failures = 0
        self.sent_events = 0
        self.sent_batches = 0
        self.rejected_events = 0
        self.failed_posts = 0
        self.cloud_up = sender is not None

    @property
    def spool_depth(self) -> int:
        return self.spool.depth_events

    # --- the two tasks ------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self.run_committer(), self.run_sender())

    async def run_committer(self) -> None:
        full = self.buffer.full_event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(full.wait(), self._flush_interval_s)
            full.clear()
            await self.commit()

    async def run_sender(self) -> None:
        if self._sender is None:
            return  # air-gapped: events stay in the (bounded) spool
        while True:
            try:
                await self.drain()
            except OSError:
                # The spool's disk failed under us: keep trying, never stop reporting.
                log.exception("could not read the spool; retrying")
                self._mark_down()
            wait = self._flush_interval_s
            if not self.cloud_up:
                wait = max(wait, self._retry_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), wait)
            self._spooled.clear()

    # --- committing -----------------------------------------------------------------------

    async def commit(self) -> int:
        """Move everything buffered into the spool (one fsync); the event count."""
        events = self.buffer.take_all()
        if not events:
            return 0
        try:
            await asyncio.to_thread(self._append, events)
        except OSError:
            self.spool_failures += 1
            self.buffer.put_back(events)  # kept in memory (bounded), tried again next time
            log.exception("could not spool %d access events; keeping them in memory", len(events))
            return 0
        self.spooled_events += len(events)
        self._spooled.set()
        return len(events)

    def _append(self, events: list[AccessEvent]) -> None:
        self.spool.append_many(list(batches(self._node_id, events)))

    # --- sending --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Send spooled batches oldest-first until the spool is empty, a POST fails, or
        (after a failure) the retry time has not come yet."""
        if self._sender is None:
            return
        while self.cloud_up or self._clock() >= self._retry_at:
            batch = await asyncio.to_thread(self.spool.peek)
            if batch is None:
                return
            result = await self._post(batch.payload, batch.events)
            if result is SendResult.FAILED:
                return
            await asyncio.to_thread(self.spool.ack, batch)

    async def flush_once(self) -> None:
        """Commit what is buffered, then send what the spool holds (tests, shutdown)."""
        await self.commit()
        await self.drain()

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
        """Final flush at shutdown: commit what is buffered (nothing is lost after this),
        then deliver what can be delivered within ``deadline_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline_s):
                await self.commit()
                await self.drain()
        if len(self.buffer):  # the commit itself ran out of time: spool synchronously
            with contextlib.suppress(OSError):
                self._append(self.buffer.take_all())
        self.spool.close()
