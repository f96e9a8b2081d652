"""Access events: buffered in memory, committed to the disk spool within the flush window,
sent to the control plane from the spool, and acknowledged only once it accepted them.

``EventBuffer`` is the ``EventSink`` the data path records into: an in-memory list (an
append on the request path; handing each event to a thread or a queue was measured at
~6x the cost of the append). The ``Reporter`` runs two tasks:

- the *committer* wakes every ``flush_interval_s`` (or as soon as a full batch of 500
  events, the contract's maximum, is waiting), cuts the buffer into batches and appends
  them to the spool with one fsync (group commit), in a thread. From then on the events
  survive a crash, a SIGKILL or a power loss, whatever the control plane does;
- the *sender* POSTs spooled batches oldest-first and acknowledges each in the spool
  only after the control plane accepted it (2xx). A failure (network, timeout, 5xx, a
  401/403) backs off and retries the same batch; a batch the control plane refuses for
  good (another 4xx) is dropped and counted instead of blocking the spool forever,
  unless it holds folded records: a control plane that predates them refuses them, so
  they are kept and retried, and ``/readyz`` says the control plane must be upgraded.

Durability window: an event recorded by a worker process reaches the agent with the
worker's next flush (``event_flush_interval_s``), and the spool with the agent's next
commit (the same interval) plus one fsync: about 2 x 0.2 s + a few ms by default, and
one interval less in in-process mode. A node killed inside that window loses at most the
events of that window; a node killed later loses nothing.

Folding: while the node cannot deliver (air-gapped, the control plane unreachable, or a
backlog beyond ``fold_above`` of the spool), the committer does not spool each event:
it folds them per device, outcome and window (``core.event_fold``) into a table held
in memory, and appends a window's records to the spool once the window has ended. The
table is written to a checkpoint file (``<spool>/open.fold``, replaced atomically) at
most every ``checkpoint_interval_s``, so a crash loses at most that much, and a restart
spools what the checkpoint holds (skipping records the spool already has: a crash
between spooling a window and rewriting the checkpoint counts nothing twice). As soon as
the node can deliver again, the whole table is spooled and events go out one by one as
before; online, nothing changes (no folding, and the same bytes on the wire).

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
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from onprem_gateway.agent.cloud import SendResult
from onprem_gateway.agent.event_buffer import BATCH_SIZE, EventBuffer
from onprem_gateway.agent.persist import fsync_dir
from onprem_gateway.agent.spool import Spool
from onprem_gateway.core import event_fold
from onprem_gateway.core.event_fold import Aggregate, FoldKey, FoldWindows
from seg_contract import AccessEvent, AccessEventBatch

log = logging.getLogger(__name__)


class EventSender(Protocol):
    async def post_events(self, batch_json: bytes) -> SendResult: ...


# Fields a single event leaves out on the wire (an older control plane knows none).
_FOLD_FIELDS = {"events": {"__all__": {"count", "first_at"}}}


def batches(node_id: str, events: list[AccessEvent]) -> Iterator[tuple[bytes, int]]:
    """(batch JSON, requests it stands for) per ``BATCH_SIZE`` events."""
    for start in range(0, len(events), BATCH_SIZE):
        chunk = tuple(events[start : start + BATCH_SIZE])
        batch = AccessEventBatch(node_id=node_id, events=chunk)
        folded = any(e.folded for e in chunk)
        body = batch.model_dump_json() if folded else batch.model_dump_json(exclude=_FOLD_FIELDS)
        yield body.encode(), sum(e.count for e in chunk)


class FoldCheckpoint:
    """The folding table's records on disk, one JSON event a line, replaced atomically
    (temporary file, fsync, rename).

    Each aggregate's line is kept until the aggregate changes (``fold`` replaces only the
    aggregates it touched), so a write serialises only what changed since the last one:
    its cost follows the request rate, not the size of the table (10,000 open records
    cost ~100 ms to serialise whole, every second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0
        self._lines: dict[FoldKey, tuple[Aggregate, bytes]] = {}

    def write_table(self, table: dict[FoldKey, Aggregate]) -> None:
        lines: dict[FoldKey, tuple[Aggregate, bytes]] = {}
        for key, aggregate in table.items():
            held = self._lines.get(key)
            if held is None or held[0] is not aggregate:
                held = (aggregate, event_fold.record(aggregate).model_dump_json().encode())
            lines[key] = held
        self._lines = lines
        self.write([line for _, line in lines.values()])

    def write(self, lines: list[bytes]) -> None:
        if not lines:
            self.clear()
            return
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        fsync_dir(self.path.parent)
        self.writes += 1

    def read(self) -> list[AccessEvent]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        out: list[AccessEvent] = []
        for line in lines:
            try:
                out.append(AccessEvent.model_validate_json(line))
            except ValueError:
                log.error("fold checkpoint %s: unreadable line skipped", self.path.name)
        return out

    def clear(self) -> None:
        self._lines = {}
        if self.path.exists():
            self.path.unlink()
            fsync_dir(self.path.parent)


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
        wall: Callable[[], float] = time.time,
        windows: FoldWindows = event_fold.DEFAULT_WINDOWS,
        fold_above: float = 0.125,
        checkpoint_interval_s: float = 1.0,
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
        # The control plane refused a batch of folded records (it predates them).
        self.folded_refused = False
        self.cloud_up = sender is not None
        # Folding (module docstring).
        self._wall = wall
        self._windows = windows
        self._fold_above = fold_above
        self._checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint = FoldCheckpoint(spool.directory / "open.fold")
        self._table: dict[FoldKey, Aggregate] = {}
        # The table is changed in worker threads; a commit cancelled at shutdown leaves
        # its thread running while ``close`` flushes: one at a time, or a window could
        # be spooled twice.
        self._table_lock = threading.Lock()
        self._closing = False
        self._checkpointed_at = 0.0
        self._dirty = False
        self.folding = False
        self.folded_events = 0  # requests folded (they reach the spool inside records)
        self.fold_records = 0  # folded records spooled

    @property
    def open_records(self) -> int:
        return len(self._table)

    @property
    def open_events(self) -> int:
        # The table is replaced, never changed in place: reading it from another thread
        # sees one whole version.
        return event_fold.total(self._table)

    def should_fold(self) -> bool:
        """The node cannot deliver: air-gapped, the control plane down, or a backlog
        above ``fold_above`` of the spool (once folding, until it is below half that:
        a backlog hovering at the threshold does not flip the mode at every commit)."""
        above = self._fold_above / 2 if self.folding else self._fold_above
        return (
            self._sender is None
            or not self.cloud_up
            or self.spool.depth_bytes > self.spool.max_bytes * above
        )

    @property
    def spool_depth(self) -> int:
        """Requests waiting for the control plane: spooled, or folded in open windows."""
        return self.spool.depth_events + self.open_events

    # --- the two tasks ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.to_thread(self.recover)
        except OSError:
            log.exception("could not spool the fold checkpoint; it is kept for the next start")
        await asyncio.gather(self.run_committer(), self.run_sender())

    def recover(self) -> int:
        """Spool what the fold checkpoint of an earlier run holds (records the spool
        already has excepted), then remove it; the records spooled."""
        held = self.checkpoint.read()
        if not held:
            self.checkpoint.clear()
            return 0
        present = self.spool.held_ids({r.event_id for r in held})
        todo = [r for r in held if r.event_id not in present]
        if todo:
            self.spool.append_many(list(batches(self._node_id, todo)))
        self.checkpoint.clear()
        log.info(
            "spooled %d folded records (%d events) from the fold checkpoint",
            len(todo),
            sum(r.count for r in todo),
        )
        return len(todo)

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

    async def commit(self, *, final: bool = False) -> int:
        """Move everything buffered into the spool (one fsync), or into the folding
        table while the node cannot deliver; the event count. ``final`` (shutdown)
        spools the folding table too."""
        fold = self.should_fold() and not final
        if fold != self.folding and not final:
            self.folding = fold
            if fold:
                log.warning(
                    "access events cannot be delivered: folding them per device, outcome "
                    "and window until they can",
                    extra={"fields": {"event": "event_folding", "folding": True}},
                )
            else:
                log.info(
                    "access events are delivered again: spooling %d folded records, then "
                    "every event as before",
                    len(self._table),
                    extra={"fields": {"event": "event_folding", "folding": False}},
                )
        events = self.buffer.take_all()
        if not events and not self._table:
            return 0
        try:
            if fold:
                await asyncio.to_thread(self._fold_in, events)
            else:
                await asyncio.to_thread(self._flush_table)
                if events:
                    await asyncio.to_thread(self._append, events)
        except OSError:
            self.spool_failures += 1
            self.buffer.put_back(events)  # kept in memory (bounded), tried again next time
            log.exception(
                "could not spool %d access events (%d folded records open); keeping them in memory",
                len(events),
                len(self._table),
            )
            return 0
        if not fold:
            self.spooled_events += len(events)
        self._spooled.set()
        return len(events)

    def _fold_in(self, events: list[AccessEvent]) -> None:
        with self._table_lock:
            self._fold_in_locked(events)

    def _fold_in_locked(self, events: list[AccessEvent]) -> None:
        now = self._wall()
        table = event_fold.fold(self._table, events, self._windows) if events else self._table
        if self._closing:  # a commit that outlived shutdown's flush: spool it all now
            self._table = table
            self.folded_events += len(events)
            self._flush_locked()
            return
        closed, table = event_fold.close_due(table, now)
        if closed:
            self._append(closed)  # raises before the table changes: nothing counted twice
            self.fold_records += len(closed)
            self.spooled_events += sum(r.count for r in closed)
        self._table = table
        self.folded_events += len(events)
        self._dirty = self._dirty or bool(events) or bool(closed)
        if self._dirty and (closed or now - self._checkpointed_at >= self._checkpoint_interval_s):
            self._write_checkpoint(now)

    def _write_checkpoint(self, now: float) -> None:
        try:
            self.checkpoint.write_table(self._table)
        except OSError:
            # The table is still in memory; only a crash before the next write loses it.
            log.exception("could not write the fold checkpoint")
            return
        self._checkpointed_at = now
        self._dirty = False

    def _flush_table(self) -> None:
        """Spool every open record (the node can deliver again, or is stopping)."""
        with self._table_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._table:
            return
        pending = event_fold.records(self._table)
        self._append(pending)
        self.fold_records += len(pending)
        self.spooled_events += sum(r.count for r in pending)
        self._table = {}
        self._dirty = False
        self.checkpoint.clear()

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
            self.folded_refused = False
            self.sent_events += count
            self.sent_batches += 1
            self._mark_up()
        elif result is SendResult.REJECTED and _holds_folded(payload):
            # A control plane from before folded records refuses them (``count``,
            # ``first_at``): they are not bad input, it must be upgraded. Keep them in
            # the spool and retry, saying why (readyz, metrics): nothing is lost.
            if not self.folded_refused:
                log.error(
                    "the control plane refuses folded access events: upgrade it; they "
                    "wait in the spool"
                )
            self.folded_refused = True
            self.failed_posts += 1
            self._mark_down()
            return SendResult.FAILED
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
        self._closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline_s):
                await self.commit(final=True)
                await self.drain()
        if len(self.buffer) or self._table:  # the commit ran out of time: spool synchronously
            with contextlib.suppress(OSError):
                self._flush_table()
                self._append(self.buffer.take_all())
        self.spool.close()


def _holds_folded(payload: bytes) -> bool:
    """Whether a spooled batch holds a folded record (more than one request). Only read
    when a batch is refused, so the parse costs nothing in normal operation."""
    try:
        batch = AccessEventBatch.model_validate_json(payload)
    except ValueError:
        return False
    return any(event.folded for event in batch.events)
