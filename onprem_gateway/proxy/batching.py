"""Write coalescing, shared by both sides of the proxy (``connection.py`` towards the
device, ``upstream.py`` towards the mail server).

While a protocol callback runs (one read, a revocation walk), writes are collected per
connection and sent as one buffer when it returns: a request head and its body, a
response head and its body, one ``send()`` each instead of two. On loopback every send
also runs the receiver's TCP path, so this halves the cost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar

# What a read hands to a parser: bytes, or a view of a TLS read buffer
# (``tls_reads.py``).
Chunk = TypeVar("Chunk", bound=bytes | memoryview)


class Flushable(Protocol):
    """A connection with writes held back (its ``PendingWrites``)."""

    def flush_out(self) -> None: ...


class WriteBatches:
    """The write-coalescing switch of one worker (``ServerState`` is one): whether a
    batch runs, and the connections that wrote during it."""

    def __init__(self) -> None:
        self.batching = False
        self.dirty: list[Flushable] = []

    def feed(self, feed: Callable[[Chunk], None], data: Chunk) -> None:
        """``feed(data)`` as one batch, or inside the batch already running (never
        nested in practice: the outer batch is kept)."""
        if self.batching:
            feed(data)
            return
        self.batching = True
        try:
            feed(data)
        finally:
            self.end_batch()

    def end_batch(self) -> None:
        """End the batch: each connection that wrote sends what it collected."""
        self.batching = False
        dirty = self.dirty
        while dirty:
            self.dirty = []
            for conn in dirty:
                conn.flush_out()
            dirty = self.dirty


class PendingWrites:
    """One connection's writes held back while a batch runs. The connection passes
    itself and its transport (it keeps both: no reference cycle is made here)."""

    __slots__ = ("_batches", "_chunks")

    def __init__(self, batches: WriteBatches) -> None:
        self._batches = batches
        self._chunks: list[bytes] = []

    def write(self, owner: Flushable, transport: asyncio.WriteTransport, data: bytes) -> None:
        """Send ``data`` now, or hold it until the batch ends (``owner.flush_out``)."""
        batches = self._batches
        if batches.batching:
            chunks = self._chunks
            if not chunks:
                batches.dirty.append(owner)
            chunks.append(data)
        else:
            transport.write(data)

    def flush(self, transport: asyncio.WriteTransport | None) -> None:
        """Send what is held as one buffer, unless the transport is gone or closing."""
        chunks, self._chunks = self._chunks, []
        if chunks and transport is not None and not transport.is_closing():
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def discard(self) -> None:
        """Drop what is held (the connection is aborted)."""
        self._chunks = []
