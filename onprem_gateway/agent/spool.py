"""An on-disk spool of access-event batches: append-only segment files, bounded by bytes.

Layout: ``<state_dir>/spool/<16-digit sequence>.seg``. A segment is a run of records::

    magic "SG" (2 bytes) | payload length (4 bytes, big-endian) | crc32 of payload (4) | payload

The payload is one ``AccessEventBatch`` as JSON. Appends are fsynced before ``append``
returns, so a batch the reporter has spooled survives a crash or power loss. On open,
every segment is scanned; a record that fails the magic / length / crc check (a write
torn by a crash) ends its segment: the file is truncated there and the damage counted.

Reading is oldest-first: ``peek`` returns the oldest record not yet acknowledged, ``ack``
moves past it and deletes a segment once all of its records are acknowledged. The read
position is not persisted: after a restart the unfinished segment is sent again from its
start, which is harmless because event ids make re-sends idempotent on the control plane.

The spool is bounded by ``max_bytes``: when an append would exceed it, whole segments
are evicted oldest-first and their events counted in ``evicted_events`` (a metric), so a
long outage costs the oldest events, never the node's disk.

One task (the reporter's) uses it, through worker threads (file I/O stays off the event
loop); a lock serialises the calls, because a thread cancelled from the loop's side still
runs to its end while shutdown appends the last batches.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from onprem_gateway.agent.persist import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"SG"
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


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0
    records: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    counts: list[int] = field(default_factory=list)  # events per record (-1: unknown)

    @property
    def events(self) -> int:
        return sum(max(c, 0) for c in self.counts)


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
            self._segments.append(_Segment(seq, path, good, records, counts))
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
        with self._lock:
            self._append(payload, events)

    def _append(self, payload: bytes, events: int) -> None:
        record = encode_record(payload)
        self._evict_for(len(record))
        segment, fd = self._writable(len(record))
        offset = segment.size
        os.write(fd, record)
        os.fsync(fd)
        segment.size += len(record)
        segment.records.append((offset + HEADER.size, len(payload)))
        segment.counts.append(events)

    def _writable(self, record_bytes: int) -> tuple[_Segment, int]:
        if self._active is not None:
            segment, fd = self._active
            if segment.size + record_bytes <= self.segment_bytes or not segment.records:
                return segment, fd
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
            log.warning(
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

    def peek(self) -> bytes | None:
        """The oldest unacknowledged batch (its JSON payload), or None."""
        with self._lock:
            return self._peek()

    def _peek(self) -> bytes | None:
        while self._segments:
            head = self._segments[0]
            if self._cursor < len(head.records):
                offset, length = head.records[self._cursor]
                with head.path.open("rb") as fh:
                    fh.seek(offset)
                    return fh.read(length)
            if self._active is not None and self._active[0] is head:
                return None  # everything written so far is acknowledged
            self._drop_head()
        return None

    def ack(self) -> None:
        """The batch ``peek`` returned was delivered."""
        with self._lock:
            if not self._segments:
                return
            head = self._segments[0]
            self._cursor += 1
            if self._cursor >= len(head.records):
                self._drop_head()

    def close(self) -> None:
        with self._lock:
            self._close_active()


def _count_events(payload: bytes) -> int:
    # Cheap and good enough for a gauge: each event carries exactly one "event_id" key.
    return payload.count(b'"event_id"')
