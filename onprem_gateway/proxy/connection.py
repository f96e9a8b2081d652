"""One device connection: an asyncio Protocol with an httptools request parser.

It enforces the edge limits (header bytes and count, URL and query length, body size,
connections per client address, an absolute deadline for each request head), frames
requests into ``RequestFlow`` objects, keeps HTTP/1.1 answers in request order
(pipelined requests wait with reading paused), and tracks the idle timeout that the
server's sweeper enforces (``timeout`` changes with the connection's phase: keep-alive,
header, an ordinary request, a long-poll).

Connection-bound authentication lives here too: ``binding`` is the identity an NTLM
AUTHENTICATE proved on this connection (later requests without credentials are that
user, as IIS treats them), and ``private_upstream`` the upstream connection that carries
it, which no other client connection ever uses and which is closed with this one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httptools

from onprem_gateway.core.identity import Binding
from onprem_gateway.proxy import headers as header_rules
from onprem_gateway.proxy import responses
from onprem_gateway.proxy.batching import PendingWrites
from onprem_gateway.proxy.flow import RequestFlow
from onprem_gateway.proxy.tls_reads import BufferedReads

if TYPE_CHECKING:
    from onprem_gateway.proxy.state import ServerState
    from onprem_gateway.proxy.upstream import UpstreamConnection

log = logging.getLogger(__name__)


# Headers that must appear at most once (RFC 9110 5.3 allows repeating only list-valued
# fields; these decide identity, routing or framing).
_UNIQUE = frozenset(
    {
        b"authorization",
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"ms-asprotocolversion",
        b"x-ms-policykey",
        b"user-agent",
    }
)


class _LimitExceededError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientConnection(asyncio.Protocol):
    PAUSE_PIPELINE = 1
    PAUSE_UPSTREAM = 2
    PAUSE_PENDING = 4

    __slots__ = (
        "_expect",
        "_header_bytes",
        "_headers",
        "_in_head",
        "_lookup",
        "_out",
        "_parser",
        "_paused",
        "_queue",
        "_receiving",
        "_url",
        "binding",
        "client_ip",
        "closed",
        "current",
        "head_deadline",
        "last_active",
        "peer_ip",
        "peer_trusted",
        "private_upstream",
        "state",
        "timeout",
        "transport",
        "write_paused",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.closed = False
        self.current: RequestFlow | None = None
        self._receiving: RequestFlow | None = None
        # Pipelined requests waiting for the current one. A list, not a deque: empty on
        # nearly every connection (56 bytes against 760 per held Ping), and never longer
        # than what one read held, as reading pauses behind the first one queued.
        self._queue: list[RequestFlow] = []
        self._out = PendingWrites(state)
        self._paused = 0
        self.write_paused = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes, bytes]] = []
        self._lookup: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._expect = False
        self.timeout = state.settings.timeouts.client_keepalive_s
        self.last_active = 0.0
        # When the request head being received must be complete (0: none pending).
        self.head_deadline = 0.0
        self._in_head = False
        self.peer_trusted = False
        # The address counted against max_connections_per_ip ("" while none is).
        self.client_ip = ""
        self.binding: Binding | None = None
        self.private_upstream: UpstreamConnection | None = None

    # --- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        state = self.state
        self.transport = transport  # type: ignore[assignment]
        # Made here, not in __init__: the parser holds this protocol, and a TLS
        # handshake that fails never reaches connection_lost (which drops the parser),
        # so a protocol that never connected would be freed only by the cyclic GC.
        self._parser = httptools.HttpRequestParser(self)
        if len(state.connections) >= state.max_connections or state.closing:
            # Over the limit: refuse at once, the device retries (another node behind the
            # load balancer may take it).
            self.closed = True
            transport.abort()  # type: ignore[attr-defined]
            state.metrics.connections_refused += 1
            return
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else ""
        # A trusted proxy (load balancer) carries many clients: its connections are
        # counted per forwarded client once a request names one (on_headers_complete).
        self.peer_trusted = header_rules.is_trusted(self.peer_ip, state.settings.trusted_proxies)
        if not self.peer_trusted:
            if not state.count_ip(self.peer_ip):
                self.closed = True
                transport.abort()  # type: ignore[attr-defined]
                return
            self.client_ip = self.peer_ip
        state.connections.add(self)
        state.metrics.connections += 1
        self.last_active = state.loop.time()
        transport.set_write_buffer_limits(high=state.settings.limits.write_high_water)  # type: ignore[attr-defined]

    def data_received(self, data: bytes | memoryview) -> None:
        state = self.state
        now = self.last_active = state.loop.time()
        if self.current is None and not self.head_deadline:
            # The first byte of a request head (or of anything between requests):
            # the whole head is due by the deadline, however it trickles in.
            self.head_deadline = now + state.settings.timeouts.header_s
        state.feed(self._feed, data)

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _LimitExceededError):
                self._refuse(cause.status, cause.reason)
            else:
                log.exception("request handling failed", exc_info=cause)
                self._refuse(500, "internal error")
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request ({str(exc)[:80]})")

    def connection_lost(self, exc: Exception | None) -> None:
        # The TLS layer keeps a buffered protocol's ``get_buffer`` and ``buffer_updated``
        # (bound methods) after the connection is lost: holding no transport, this
        # protocol is no part of a cycle with it (``TlsClientConnection``).
        self.transport = None
        if self.closed and self not in self.state.connections:
            return
        self.closed = True
        self.state.forget(self)
        self.state.metrics.connections -= 1
        if self.client_ip:
            self.state.uncount_ip(self.client_ip)
            self.client_ip = ""
        up, self.private_upstream = self.private_upstream, None
        self.binding = None
        if up is not None:
            up.private_to = None
            if up.owner is None:  # idle: close it now (a flow's own is aborted below)
                up.close()
        # The parser holds this protocol: drop the cycle so the connection is freed by
        # reference counting, not by the (slow, with many held Pings) cyclic GC.
        del self._parser
        current, self.current = self.current, None
        if current is not None:
            current.connection_lost()
        for queued in self._queue:
            queued.connection_lost()
        self._queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.current is not None:
            self.current.client_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.current is not None:
            self.current.client_resume_writing()

    # --- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        self._lookup = {}
        self._header_bytes = 0
        self._expect = False
        if self.current is None:
            self.timeout = self.state.settings.timeouts.header_s

    def on_url(self, url: bytes) -> None:
        self._url += url
        limits = self.state.settings.limits
        if len(self._url) > limits.max_url_bytes:
            raise _LimitExceededError(414, f"request URL longer than {limits.max_url_bytes}")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.state.settings.limits
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > limits.max_header_bytes:
            raise _LimitExceededError(431, f"request headers over {limits.max_header_bytes} bytes")
        headers = self._headers
        if len(headers) >= limits.max_header_count:
            raise _LimitExceededError(431, f"more than {limits.max_header_count} request headers")
        lname = name.lower()
        headers.append((lname, name, value))
        lookup = self._lookup
        if lname in lookup:
            if lname in _UNIQUE:
                # Two Authorization (or Host, length...) headers: we and the upstream
                # might each pick a different one and disagree on who is asking.
                raise _LimitExceededError(400, f"duplicate {lname.decode('latin-1')} header")
            return
        lookup[lname] = value
        if lname == b"expect":
            if value.strip().lower() != b"100-continue":
                raise _LimitExceededError(417, "only Expect: 100-continue is supported")
            self._expect = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        limits = self.state.settings.limits
        self._in_head = False
        if self.current is None:
            self.head_deadline = 0.0
        if self.peer_trusted:
            self._count_forwarded_client()
        url = self._url
        query_at = url.find(b"?")
        if query_at >= 0 and len(url) - query_at - 1 > limits.max_query_bytes:
            raise _LimitExceededError(414, f"query string longer than {limits.max_query_bytes}")
        if not url.startswith(b"/"):
            raise _LimitExceededError(400, "request target must be a path (origin form)")
        lookup = self._lookup
        # llhttp has checked Content-Length is a number, and refuses a request whose
        # final transfer coding is not chunked or that carries both.
        chunked = b"transfer-encoding" in lookup
        raw_length = lookup.get(b"content-length")
        content_length = int(raw_length) if raw_length is not None and not chunked else None
        if content_length is not None and content_length > limits.max_body_bytes:
            raise _LimitExceededError(413, f"request body over {limits.max_body_bytes} bytes")
        flow = RequestFlow(
            self,
            parser.get_method(),
            url,
            self._headers,
            lookup,
            keep_alive=parser.should_keep_alive(),
            http11=parser.get_http_version() == "1.1",
            content_length=content_length,
            chunked=chunked,
            expect_continue=self._expect,
        )
        self._receiving = flow
        # The flow holds the parsed head from here on and drops it once the request is
        # forwarded; this connection keeping it too would hold every header of a held
        # Ping for up to an hour.
        self._headers = []
        self._lookup = {}
        if self.current is None:
            self.current = flow
            self.timeout = self.state.settings.timeouts.request_idle_s
            flow.start()
        else:
            self._queue.append(flow)
            self.pause_reading_for(self.PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        flow = self._receiving
        if flow is not None:
            if flow.chunked:
                limit = self.state.settings.limits.max_body_bytes
                if flow.body_seen + len(body) > limit:
                    raise _LimitExceededError(413, f"request body over {limit} bytes")
            flow.client_body(body)

    def on_message_complete(self) -> None:
        flow, self._receiving = self._receiving, None
        if flow is not None:
            flow.client_body_end()

    def _count_forwarded_client(self) -> None:
        state = self.state
        client = header_rules.forwarded_client(
            self.peer_ip, self._headers, state.settings.trusted_proxies
        )
        if client == self.client_ip:
            return
        if self.client_ip:
            state.uncount_ip(self.client_ip)
            self.client_ip = ""
        if not state.count_ip(client):
            raise _LimitExceededError(429, "too many connections from this client address")
        self.client_ip = client

    # --- connection-bound authentication -----------------------------------------------
    def private_upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection that carried this connection's NTLM identity closed:
        the identity is gone with it (the mail server will ask again)."""
        if self.private_upstream is conn:
            self.private_upstream = None
            self.binding = None

    # --- used by flows -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._out.write(self, transport, data)

    def flush_out(self) -> None:
        self._out.flush(self.transport)

    def touch(self) -> None:
        self.last_active = self.state.loop.time()

    def pause_reading_for(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading_for(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def flow_finished(self, flow: object, *, close: bool) -> None:
        if flow is not self.current:
            return
        self.current = None
        if close or self.closed:
            self.close()
            return
        self.last_active = self.state.loop.time()
        if self._in_head:
            # The next request's head is already arriving: its deadline runs from now.
            self.head_deadline = self.last_active + self.state.settings.timeouts.header_s
        if self._queue:
            nxt = self._queue.pop(0)
            if not self._queue:
                self.resume_reading_for(self.PAUSE_PIPELINE)
            self.current = nxt
            self.timeout = self.state.settings.timeouts.request_idle_s
            nxt.start()
        elif self.state.closing:
            self.close()
        else:
            self.timeout = self.state.settings.timeouts.client_keepalive_s

    def close(self) -> None:
        if self.transport is not None:
            self.flush_out()
            self.transport.close()

    def abort(self) -> None:
        self._out.discard()
        if self.transport is not None:
            self.transport.abort()

    # --- helpers -----------------------------------------------------------------------
    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request that broke the HTTP rules or a limit, then close: the
        parser's position in the byte stream can no longer be trusted."""
        flow = self.current
        if flow is not None and flow.response_started:
            self.abort()
            return
        self.state.metrics.count_response(status)
        self.write(
            responses.local_response(
                status, responses.text(reason), keep_alive=False, date=self.state.date
            )
        )
        self.close()

    def idle_expired(self, now: float) -> bool:
        """Called by the sweeper; True when this connection was closed for idling or for
        missing its request-head deadline."""
        current = self.current
        if current is None and 0.0 < self.head_deadline < now:
            self.state.metrics.header_timeouts += 1
            self._refuse(408, "the request head did not arrive in time")
            return True
        if now - self.last_active <= self.timeout:
            return False
        if current is not None:
            current.timed_out()
        else:
            self.close()
        return True


class TlsClientConnection(ClientConnection, BufferedReads):
    """A device connection over TLS: its reads are decrypted into the buffer that all
    of the server's TLS connections share (``tls_reads.py``)."""

    __slots__ = ("_read_buffer",)

    def __init__(self, state: ServerState, read_buffer: memoryview) -> None:
        super().__init__(state)
        self._read_buffer = read_buffer
