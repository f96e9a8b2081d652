"""Write coalescing (``proxy/batching.py``) on a fake transport: no sockets, no loop."""

from __future__ import annotations

import pytest

from onprem_gateway.proxy.batching import PendingWrites, WriteBatches


class FakeTransport:
    """Records each ``write`` call (one call is one send)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closing


class FakeConnection:
    """A connection the way both protocols use ``PendingWrites``."""

    def __init__(self, batches: WriteBatches, transport: FakeTransport | None) -> None:
        self.transport = transport
        self.out = PendingWrites(batches)
        self.flushes = 0

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.out.write(self, self.transport, data)  # type: ignore[arg-type]

    def flush_out(self) -> None:
        self.flushes += 1
        self.out.flush(self.transport)  # type: ignore[arg-type]


def test_outside_a_batch_each_write_is_sent_at_once() -> None:
    batches = WriteBatches()
    transport = FakeTransport()
    conn = FakeConnection(batches, transport)
    conn.write(b"head")
    conn.write(b"body")
    assert transport.sent == [b"head", b"body"]
    assert batches.dirty == []


def test_a_batch_sends_each_connections_writes_as_one_buffer_when_it_ends() -> None:
    batches = WriteBatches()
    one, two = FakeTransport(), FakeTransport()
    a, b = FakeConnection(batches, one), FakeConnection(batches, two)

    def feed(data: bytes) -> None:
        a.write(b"HTTP/1.1 200 OK\r\n\r\n")
        b.write(data)
        a.write(b"body")
        assert one.sent == two.sent == []  # nothing leaves during the batch

    batches.feed(feed, b"POST / HTTP/1.1\r\n\r\n")
    assert one.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert two.sent == [b"POST / HTTP/1.1\r\n\r\n"]  # one chunk: sent as it is
    assert (a.flushes, b.flushes) == (1, 1)  # each connection is listed once
    assert batches.batching is False
    assert batches.dirty == []


def test_a_feed_inside_a_running_batch_keeps_the_outer_batch() -> None:
    batches = WriteBatches()
    transport = FakeTransport()
    conn = FakeConnection(batches, transport)

    def outer(data: bytes) -> None:
        conn.write(data)
        batches.feed(conn.write, b"inner")
        assert batches.batching is True
        assert transport.sent == []

    batches.feed(outer, b"outer")
    assert transport.sent == [b"outerinner"]


def test_the_batch_ends_even_when_the_feed_raises() -> None:
    batches = WriteBatches()
    transport = FakeTransport()
    conn = FakeConnection(batches, transport)

    def failing(data: bytes) -> None:
        conn.write(data)
        raise ValueError("parser")

    with pytest.raises(ValueError, match="parser"):
        batches.feed(failing, b"partial")
    assert transport.sent == [b"partial"]
    assert batches.batching is False


def test_nothing_is_sent_to_a_closing_or_missing_transport() -> None:
    batches = WriteBatches()
    transport = FakeTransport()
    conn = FakeConnection(batches, transport)
    batches.batching = True
    conn.write(b"late")
    transport.closing = True
    batches.end_batch()
    assert transport.sent == []

    gone = FakeConnection(batches, FakeTransport())
    batches.batching = True
    gone.write(b"late")
    gone.transport = None  # the upstream connection was lost during the batch
    batches.end_batch()
    assert gone.flushes == 1


def test_discarded_writes_are_never_sent() -> None:
    batches = WriteBatches()
    transport = FakeTransport()
    conn = FakeConnection(batches, transport)
    batches.batching = True
    conn.write(b"answer")
    conn.out.discard()  # the connection was aborted
    batches.end_batch()
    assert transport.sent == []
