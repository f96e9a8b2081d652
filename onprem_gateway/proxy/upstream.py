"""Connections to the mail server: a keep-alive pool and the response side of one leg.

``UpstreamConnection`` is an asyncio Protocol with an httptools response parser. While
it serves a request it hands every parser event to its ``owner`` (a ``RequestFlow``); idle,
it sits in the ``UpstreamPool``. The pool is unlimited on purpose: every held Ping owns
one upstream connection for up to an hour, and a bounded pool would queue the next
device's Sync behind thousands of idle long-polls. Idle connections are
expired by the server's sweeper (``expire_idle``).

Private connections (HAProxy's rule for connection-oriented authentication): once a
request on a connection carried ``Authorization: NTLM|Negotiate``, or the upstream
answered one with 401 and ``WWW-Authenticate: NTLM|Negotiate``, the connection may be
authenticated as that client's user. It then belongs to that client connection only
(``private_to``): it never enters the pool, it carries that client's later requests, and
it is closed with it. ``release`` refuses a private connection outright.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
from typing import TYPE_CHECKING, Protocol

import httptools

from onprem_gateway.proxy.batching import PendingWrites, WriteBatches
from onprem_gateway.proxy.metrics import ProxyMetrics
from onprem_gateway.proxy.settings import Upstream
from onprem_gateway.proxy.tls_reads import BufferedReads, tls_read_buffer

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class PrivateHolder(Protocol):
    """The client connection a private upstream connection belongs to."""

    def private_upstream_lost(self, conn: UpstreamConnection) -> None: ...


class UpstreamOwner(Protocol):
    """What an upstream connection reports to the request it serves."""

    def upstream_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes, bytes]],
        length: int | None,
        chunked: bool,
        has_connection: bool,
    ) -> None: ...
    def upstream_body(self, chunk: bytes) -> None: ...
    def upstream_done(self) -> None: ...
    def upstream_failed(self, kind: str) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...


class UpstreamError(Exception):
    """The upstream could not be reached; ``kind`` names why (metrics label)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_chunked",
        "_has_connection",
        "_headers",
        "_informational",
        "_length",
        "_out",
        "_parser",
        "_pool",
        "_state",
        "idle_since",
        "keep_alive",
        "owner",
        "private_to",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamPool, state: WriteBatches) -> None:
        self._pool = pool
        self._state = state
        self._out = PendingWrites(state)
        self.transport: asyncio.Transport | None = None
        self.owner: UpstreamOwner | None = None
        self.private_to: PrivateHolder | None = None
        self._headers: list[tuple[bytes, bytes, bytes]] = []
        self._length: int | None = None
        self._chunked = False
        self._has_connection = False
        self._informational = False
        self.keep_alive = True
        self.idle_since = 0.0
        self.reused = False

    # --- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Made here, not in __init__: the parser holds this protocol, and a connect that
        # fails never reaches connection_lost (which drops the parser).
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes | memoryview) -> None:
        self._state.feed(self._feed, data)

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            log.warning("upstream sent invalid HTTP: %s", exc)
            self.keep_alive = False
            owner, self.owner = self.owner, None
            self.close()
            if owner is not None:
                owner.upstream_failed("protocol")

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.keep_alive = False
        del self._parser  # the parser holds this protocol: free by refcount, not GC
        self._pool.forget(self)
        holder, self.private_to = self.private_to, None
        if holder is not None:  # first: the owner may retry on a new connection
            holder.private_upstream_lost(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_failed("reset")

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resume_writing()

    # --- httptools callbacks ---------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._length = None
        self._chunked = self._has_connection = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        self._headers.append((lname, name, value))
        if lname == b"content-length":
            try:
                self._length = int(value)
            except ValueError:
                self._length = None  # llhttp rejects it before the body anyway
        elif lname == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            self._has_connection = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        # 1xx (e.g. a 100 Continue the gateway did not ask for): not forwarded, the
        # gateway answered the device's Expect itself. 101 never happens: no Upgrade
        # header is ever forwarded.
        self._informational = 100 <= status < 200
        if self._informational or self.owner is None:
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.owner.upstream_head(
            status, self._headers, self._length, self._chunked, self._has_connection
        )

    def on_body(self, body: bytes) -> None:
        if self.owner is not None:
            self.owner.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_done()

    # --- used by the owner -------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Open, keep-alive, not closing: it can carry another request."""
        return self.keep_alive and self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        self._out.write(self, transport, data)

    def flush_out(self) -> None:
        self._out.flush(self.transport)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.flush_out()
            self.transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        self._out.discard()
        if self.transport is not None:
            self.transport.abort()


class TlsUpstreamConnection(UpstreamConnection, BufferedReads):
    """A connection to the mail server over TLS: its reads are decrypted into the buffer
    that all of the pool's TLS connections share (``tls_reads.py``)."""

    __slots__ = ("_read_buffer",)

    def __init__(self, pool: UpstreamPool, state: WriteBatches, read_buffer: memoryview) -> None:
        super().__init__(pool, state)
        self._read_buffer = read_buffer


class UpstreamPool:
    """Pooled keep-alive connections to one upstream (one pool per worker process)."""

    def __init__(
        self,
        upstream: Upstream,
        connect_timeout_s: float,
        metrics: ProxyMetrics,
        batching: WriteBatches,
    ) -> None:
        self._batching = batching
        self._upstream = upstream
        self._connect_timeout = connect_timeout_s
        self._metrics = metrics
        # Insertion-ordered: popitem() takes the warmest connection, removal is O(1).
        self._idle: dict[UpstreamConnection, None] = {}
        self._ssl = _client_context(upstream) if upstream.scheme == "https" else None
        self._server_hostname = upstream.server_hostname or upstream.host
        self._read_buffer = tls_read_buffer() if self._ssl else None

    def take_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn, _ = idle.popitem()
            if conn.transport is not None and not conn.transport.is_closing():
                self._metrics.upstream_idle = len(idle)
                conn.reused = True
                return conn
        self._metrics.upstream_idle = 0
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], UpstreamConnection]
        read_buffer = self._read_buffer
        if read_buffer is None:
            factory = lambda: UpstreamConnection(self, self._batching)  # noqa: E731
        else:
            factory = lambda: TlsUpstreamConnection(self, self._batching, read_buffer)  # noqa: E731
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    factory,
                    self._upstream.host,
                    self._upstream.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname if self._ssl else None,
                )
        except TimeoutError:
            raise UpstreamError("timeout", "connect timed out") from None
        except ssl.SSLError as exc:
            raise UpstreamError("tls", f"TLS failed: {exc.reason or exc}") from None
        except ConnectionRefusedError:
            raise UpstreamError("refused", "connection refused") from None
        except OSError as exc:
            kind = "refused" if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH) else "os"
            raise UpstreamError(kind, exc.strerror or str(exc)) from None
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Put a connection whose flow completed cleanly back in the pool (never a
        private one: it may be authenticated as someone)."""
        if conn.private_to is not None:
            conn.close()
            return
        if conn.keep_alive and conn.transport is not None and not conn.transport.is_closing():
            conn.owner = None
            conn.idle_since = now
            self._idle[conn] = None
            self._metrics.upstream_idle = len(self._idle)
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: drop it from the idle list if it is there."""
        if self._idle.pop(conn, 0) is None:
            self._metrics.upstream_idle = len(self._idle)

    def expire_idle(self, now: float, max_idle_s: float) -> None:
        stale = [c for c in self._idle if now - c.idle_since > max_idle_s]
        for conn in stale:
            del self._idle[conn]
            conn.close()
        self._metrics.upstream_idle = len(self._idle)

    def close_all(self) -> None:
        idle, self._idle = self._idle, {}
        for conn in idle:
            conn.close()
        self._metrics.upstream_idle = 0


def _client_context(upstream: Upstream) -> ssl.SSLContext:
    """Verifying TLS client context: the configured CA bundle, else the system's."""
    ctx = ssl.create_default_context(cafile=str(upstream.ca_bundle) if upstream.ca_bundle else None)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
