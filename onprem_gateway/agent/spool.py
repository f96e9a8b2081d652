"""An on-disk spool of access-event batches: append-only segment files, bounded by bytes.

Every access event passes through it: the reporter commits each flush's events here
first and sends only from here, so an event is on disk within the flush window whatever
the control plane does (``reporter.py``).

Layout: ``<state_dir>/spool/<16-digit sequence>.seg``. A segment is a run of records::

    magic "SG" (2 bytes) | payload length (4 bytes, big-endian) | crc32 of payload (4) | payload

The payload is one ``AccessEventBatch`` as JSON. ``append_many`` writes a flush's
batches and fsyncs once (group commit) before it returns, and only then are they
visible to ``peek``: nothing is sent before it is durable, and a batch the reporter has
spooled survives a crash or power loss. On open, every segment is scanned; a record that
fails the magic / length / crc check (a write torn by a crash) ends its segment: the
file is truncated there and the damage counted.

Reading is oldest-first: ``peek`` returns the oldest record not yet acknowledged (with
its position), ``ack`` moves past exactly that record and deletes a segment once all of
its records are acknowledged. The read position is not persisted: after a restart the
unfinished segment is sent again from its start, record for record as it was written,
which is harmless because the control plane de-duplicates by event id (and counts a
batch once by the fingerprint of its event ids).

The spool is bounded by ``max_bytes``: when an append would exceed it, whole segments
are evicted oldest-first and their events counted in ``evicted_events`` (a metric), so a
long outage costs the oldest events, never the node's disk. Long before that, a node
that cannot deliver folds its events (``reporter.py``, ``core.event_fold``). ``state``
says whether anything is being lost: ``near_full`` from ``NEAR_FULL`` of the bound,
``evicting`` from an eviction until ``EVICTING_HOLD_S`` without one; each change of it
is logged once, as a warning (or as info when it clears).

The reporter's committer and sender use it from worker threads (file I/O stays off the
event loop); a lock serialises the calls. ``ack`` names the record it acknowledges, so an
eviction between a ``peek`` and its ``ack`` can never make the ack skip another record.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from onprem_gateway.agent.persist import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"SG"
NEAR_FULL = 0.9  # of max_bytes: "near_full" from here
EVICTING_HOLD_S = 300.0  # "evicting" lasts this long after the last eviction
OK, NEAR_FULL_STATE, EVICTING = "ok", "near_full", "evicting"
SPOOL_STATES = (OK, NEAR_FULL_STATE, EVICTING)
HEADER = struct.Struct(">2sII")
SUFFIX = ".seg"


def encode_record(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """Scan a segment: the (offset, length) of each good payload, and the byte count
    up to the end of the last good record (where a torn tail starts)."""
    records: list[tuple[int, int]] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, length, crc = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        end = start + length
        if magic != MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
            break
        records.append((start, length))
        pos = end
    return records, pos


@dataclass(eq=False)  # compared by identity
class _Segment:
    seq: int
    path: Path
    size: int = 0
    records: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    counts: list[int] = field(default_factory=list)  # events per record (-1: unknown)
    # When each record was appended (epoch seconds; for records found at start, the
    # segment's last write: the true age is at least that).
    appended_at: list[float] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(max(c, 0) for c in self.counts)


@dataclass(frozen=True)
class SpooledBatch:
    """One spooled record as ``peek`` returns it; hand it back to ``ack``."""

    seq: int  # its segment
    index: int  # its position in the segment
    payload: bytes
    events: int
    appended_at: float


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # Segments small enough to evict in fine steps, large enough to keep file
        # counts low: a sixteenth of the bound, between 64 KiB and 4 MiB.
        self.segment_bytes = segment_bytes or max(64 * 1024, min(4 << 20, max_bytes // 16))
        self._segments: list[_Segment] = []
        self._active: tuple[_Segment, int] | None = None  # segment being appended, its fd
        self._cursor = 0  # index of the next unacknowledged record in the head segment
        self.evicted_events = 0
        self.evicted_batches = 0
        self.damaged_segments = 0
        self.last_evicted_at: float | None = None
        self._state = OK
        self._state_lock = threading.Lock()  # appends (threads) and scrapes both ask
        self._lock = threading.Lock()
        self._open()

    # --- state --------------------------------------------------------------------------

    @property
    def depth_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def depth_batches(self) -> int:
        total = sum(len(s.records) for s in self._segments)
        return total - self._cursor

    @property
    def depth_events(self) -> int:
        if not self._segments:
            return 0
        head = self._segments[0]
        consumed = sum(max(c, 0) for c in head.counts[: self._cursor])
        return sum(s.events for s in self._segments) - consumed

    def __bool__(self) -> bool:
        return self.depth_batches > 0

    @property
    def fill(self) -> float:
        """Share of ``max_bytes`` in use (0..1)."""
        return self.depth_bytes / self.max_bytes if self.max_bytes else 0.0

    def state(self, now: float) -> str:
        """``evicting`` (unsent events were evicted within ``EVICTING_HOLD_S``),
        ``near_full`` (at least ``NEAR_FULL`` of the bound in use) or ``ok``; a change
        since the last call is logged once."""
        with self._state_lock:
            previous = self._state
            state = self._state = spool_state(self.fill, self.last_evicted_at, now, previous)
        if state != previous:
            level = logging.INFO if state == OK else logging.WARNING
            log.log(
                level,
                "spool state %s -> %s: %.0f%% of %d bytes in use, %d unsent events evicted",
                previous,
                state,
                100 * self.fill,
                self.max_bytes,
                self.evicted_events,
                extra={
                    "fields": {
                        "event": "spool_state",
                        "from": previous,
                        "to": state,
                        "fill": round(self.fill, 4),
                        "max_bytes": self.max_bytes,
                        "evicted_events": self.evicted_events,
                    }
                },
            )
        return state

    @property
    def oldest_unsent_at(self) -> float | None:
        """When the oldest unacknowledged record was appended (epoch), None if none."""
        # Read without the lock (a gauge): copies, and no assumption that a segment
        # just created by a commit in progress already holds a record.
        cursor = self._cursor
        for n, segment in enumerate(list(self._segments)):
            first = cursor if n == 0 else 0
            appended = segment.appended_at
            if first < len(appended):
                return appended[first]
        return None

    # --- open / scan --------------------------------------------------------------------

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            data = path.read_bytes()
            records, good = decode_records(data)
            if good != len(data):
                self.damaged_segments += 1
                log.error(
                    "spool segment %s: damaged record at byte %d of %d; truncating",
                    path.name,
                    good,
                    len(data),
                )
                with path.open("r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
            if not records:
                path.unlink()
                continue
            # Event counts are not stored; -1 means "count on demand" (cheap: we only need
            # them for the depth gauge and eviction counts), so count now.
            counts = [_count_events(data[o : o + n]) for o, n in records]
            written = path.stat().st_mtime
            self._segments.append(
                _Segment(seq, path, good, records, counts, [written] * len(records))
            )
        if self._segments:
            log.info(
                "spool holds %d batches (%d events, %d bytes) from before the restart",
                self.depth_batches,
                self.depth_events,
                self.depth_bytes,
            )

    # --- writing ------------------------------------------------------------------------

    def append(self, payload: bytes, events: int) -> None:
        """Append one batch and fsync it; evict the oldest segments past ``max_bytes``."""
        self.append_many([(payload, events)])

    def append_many(self, batches: list[tuple[bytes, int]]) -> None:
        """Append batches (payload, event count) and fsync once (group commit); they
        become visible to ``peek`` only once they are on disk."""
        with self._lock:
            written: list[tuple[_Segment, int, int, int]] = []  # segment, offset, length, n
            # A call can span segments: a segment left for the next is fsynced as it is
            # closed (``_writable``), so only the last one is left to fsync here.
            unsynced = False
            for payload, events in batches:
                record = encode_record(payload)
                self._evict_for(len(record))
                segment, fd = self._writable(len(record))
                offset = segment.size
                os.write(fd, record)
                segment.size += len(record)
                unsynced = True
                written.append((segment, offset + HEADER.size, len(payload), events))
            if unsynced and self._active is not None:
                os.fsync(self._active[1])
            now = time.time()
            for segment, offset, length, events in written:
                if segment not in self._segments:
                    # Evicted by a later batch of this same call (a flush larger than
                    # the whole spool): lost like any evicted batch, and counted.
                    self.evicted_events += events
                    self.evicted_batches += 1
                    self.last_evicted_at = now
                    continue
                segment.records.append((offset, length))
                segment.counts.append(events)
                segment.appended_at.append(now)
            self.state(now)

    def _writable(self, record_bytes: int) -> tuple[_Segment, int]:
        if self._active is not None:
            segment, fd = self._active
            if segment.size + record_bytes <= self.segment_bytes or segment.size == 0:
                return segment, fd
            os.fsync(fd)  # what it holds is durable before the next segment takes over
            self._close_active()
        seq = (self._segments[-1].seq + 1) if self._segments else 1
        path = self.directory / f"{seq:016d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_dir(self.directory)
        segment = _Segment(seq, path)
        self._segments.append(segment)
        self._active = (segment, fd)
        return segment, fd

    def _close_active(self) -> None:
        if self._active is not None:
            os.close(self._active[1])
            self._active = None

    def _evict_for(self, record_bytes: int) -> None:
        while self._segments and self.depth_bytes + record_bytes > self.max_bytes:
            head = self._segments[0]
            lost = head.counts[self._cursor :] if self._cursor else head.counts
            self.evicted_events += sum(max(c, 0) for c in lost)
            self.evicted_batches += len(lost)
            self.last_evicted_at = time.time()
            # Per segment at debug level: the warning is the state change (``state``).
            log.debug(
                "spool full (%d bytes): evicted %d unsent events (segment %s)",
                self.max_bytes,
                sum(max(c, 0) for c in lost),
                head.path.name,
            )
            self._drop_head()

    def _drop_head(self) -> None:
        head = self._segments.pop(0)
        if self._active is not None and self._active[0] is head:
            self._close_active()
        head.path.unlink(missing_ok=True)
        self._cursor = 0

    # --- reading ------------------------------------------------------------------------

    def peek(self) -> SpooledBatch | None:
        """The oldest unacknowledged batch, or None."""
        with self._lock:
            return self._peek()

    def _peek(self) -> SpooledBatch | None:
        while self._segments:
            head = self._segments[0]
            if self._cursor < len(head.records):
                offset, length = head.records[self._cursor]
                with head.path.open("rb") as fh:
                    fh.seek(offset)
                    payload = fh.read(length)
                return SpooledBatch(
                    head.seq,
                    self._cursor,
                    payload,
                    max(head.counts[self._cursor], 0),
                    head.appended_at[self._cursor],
                )
            if self._active is not None and self._active[0] is head:
                return None  # everything written so far is acknowledged
            self._drop_head()
        return None

    def ack(self, batch: SpooledBatch) -> bool:
        """``batch`` (from ``peek``) was delivered: move past it. False when it is no
        longer the oldest record (evicted meanwhile): nothing moves."""
        with self._lock:
            if not self._segments:
                return False
            head = self._segments[0]
            if head.seq != batch.seq or self._cursor != batch.index:
                return False
            self._cursor += 1
            if self._cursor >= len(head.records):
                # Fully delivered, the segment being appended to included: deleting it
                # keeps a restart from sending it all again.
                self._drop_head()
            return True

    def close(self) -> None:
        with self._lock:
            self._close_active()

    def held_ids(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` an event in the spool carries (a scan of every segment: for
        start-up only)."""
        if not ids:
            return set()
        with self._lock:
            found: set[str] = set()
            for segment in self._segments:
                data = segment.path.read_bytes()
                found.update(m.decode() for m in _EVENT_ID.findall(data))
            return found & ids


_EVENT_ID = re.compile(rb'"event_id":"([^"]+)"')
_COUNT = re.compile(rb'"count":(\d+)')


def spool_state(fill: float, last_evicted_at: float | None, now: float, previous: str = OK) -> str:
    """The spool's state; leaving ``near_full`` takes 5 points below ``NEAR_FULL``, so a
    fill hovering at the line is not logged at every append."""
    if last_evicted_at is not None and now - last_evicted_at < EVICTING_HOLD_S:
        return EVICTING
    line = NEAR_FULL - 0.05 if previous != OK else NEAR_FULL
    return NEAR_FULL_STATE if fill >= line else OK


def _count_events(payload: bytes) -> int:
    # Cheap and good enough for a gauge: each event carries exactly one "event_id" key,
    # and a folded one a "count" of the requests it stands for.
    extra = sum(int(n) - 1 for n in _COUNT.findall(payload))
    return payload.count(b'"event_id"') + extra
