"""One request on a client connection, from its head to the end of its answer.

Theory of operation
-------------------
The client connection creates an ``Exchange`` when a request head is complete and calls
``start`` when it becomes the connection's current request (HTTP/1.1 answers go out in
request order; a pipelined request waits, its body buffered, with reading paused).
``start`` (``admission.py``) routes and decides synchronously (parse, policy lookup,
decision: a few µs) and then either

- answers locally (404, 400, block, 401...): the answer is written at once; a body still
  arriving is read and dropped (``discard``) so the connection stays usable, or the
  connection closes after the answer when that is cheaper or required (100-continue,
  a large body); or
- proxies: takes a pooled upstream connection (or opens one in a task: the only await on
  this path), writes the request head and streams the body as it arrives, then streams
  the response back. Each leg's write buffer pauses the other leg's reading
  (``pause_writing`` -> ``pause_reading``), so neither leg ever buffers a body.

Nothing here waits for the control plane, the disk or a lock. The only slow step,
verifying a device password (scrypt), runs in a thread and only on a cache miss.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.proxy import events, headers, responses
from onprem_gateway.proxy.admission import Admission
from onprem_gateway.proxy.upstream import UpstreamConnection, UpstreamError

if TYPE_CHECKING:
    from onprem_gateway.proxy.connection import ClientConnection
    from onprem_gateway.proxy.state import ServerState

log = logging.getLogger(__name__)

# A request body we keep a copy of, so a request that met a pooled connection the
# upstream had just closed can be sent again on a fresh one (nothing was answered).
_REPLAY_LIMIT = 64 * 1024

# Response framing towards the device.
_LENGTH, _CHUNKED, _CLOSE, _EMPTY = 0, 1, 2, 3


class Exchange(Admission):
    __slots__ = (
        "_body_done",
        "_client_framing",
        "_closing",
        "_discarding",
        "_finished",
        "_head",
        "_local_done",
        "_pending",
        "_pending_bytes",
        "_recorded",
        "_replay",
        "_retried",
        "_sent_at",
        "_upstream_paused",
        "_upstream_until_close",
        "body_seen",
        "chunked",
        "conn",
        "content_length",
        "expect_continue",
        "headers",
        "http11",
        "keep_alive",
        "lookup",
        "method",
        "response_started",
        "state",
        "target",
        "upstream",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: bytes,
        target: bytes,
        header_list: list[tuple[bytes, bytes, bytes]],
        lookup: dict[bytes, bytes],
        *,
        keep_alive: bool,
        http11: bool,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
    ) -> None:
        self.conn = conn
        self.state: ServerState = conn.state
        self.method = method
        self.target = target
        self.headers = header_list
        self.lookup = lookup
        self.keep_alive = keep_alive
        self.http11 = http11
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upstream: UpstreamConnection | None = None
        self.held = False
        self._facts: RequestFacts | None = None
        self._decision: Decision | None = None
        self._recorded = False
        self._head = b""
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._replay: list[bytes] | None = []
        self.body_seen = 0
        self._body_done = not (chunked or content_length)
        self._discarding = False
        self._local_done = False
        self.response_started = False
        self._finished = False
        self._closing = False
        self._retried = False
        self._sent_at = 0.0
        self._client_framing = _LENGTH
        self._upstream_until_close = False
        self._upstream_paused = False

    # --- local answers -----------------------------------------------------------------
    def answer(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes | None = responses.TEXT_PLAIN,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        close: bool = False,
    ) -> None:
        """Answer the device ourselves; the request body (if any) is dropped."""
        state = self.state
        if not self._body_done:
            remaining = (self.content_length or 0) - self.body_seen
            # After an Expect: 100-continue we never sent 100: the client may or may not
            # send the body, so the connection's framing is unknown (RFC 9110 10.1.1).
            if self.expect_continue or remaining > state.settings.limits.max_discard_bytes:
                close = True
            self._discarding = True
            self._pending.clear()
            self._pending_bytes = 0
            self.conn.resume_reading_for(self.conn.PAUSE_PENDING)
        keep_alive = self.keep_alive and not close and not state.closing
        self._closing = not keep_alive
        self.response_started = True
        state.metrics.count_response(status)
        self.conn.write(
            responses.local_response(
                status,
                body,
                content_type=content_type,
                headers=headers,
                keep_alive=keep_alive,
                date=state.date,
            )
        )
        self._local_done = True
        if self._body_done or self._closing:
            self._finish()

    # --- proxying --------------------------------------------------------------------------
    def _proxy(self, authorization: bytes | None) -> None:
        state = self.state
        settings = state.settings
        up_settings = settings.upstream
        host = state.upstream_authority
        if up_settings.preserve_host:
            host = self.lookup.get(b"host") or host
        xff, xfp = headers.forwarded_for(
            self.conn.peer_ip, self.headers, settings.trusted_proxies, settings.tls
        )
        if self.chunked:
            length = None
        else:
            length = self.content_length or (0 if self.method == b"POST" else None)
        self._head = headers.upstream_request_head(
            self.method,
            self.target,
            self.headers,
            host=host,
            x_forwarded_for=xff,
            x_forwarded_proto=xfp,
            content_length=length,
            chunked=self.chunked,
            authorization=authorization,
            has_connection=b"connection" in self.lookup,
        )
        # The head is built: drop the parsed headers (a held Ping keeps its exchange for
        # up to an hour; fewer live objects per held request = shorter GC passes).
        self.headers = []
        self.lookup = {}
        if self._facts is not None and self._facts.command == "Ping":
            # A Ping is answered up to an hour later: record it when forwarded (status 0
            # = "answer pending") so the dashboard sees the device at once. (Sync is
            # mostly short; whether it long-polls is in its WBXML body.)
            self._record_proxied(0)
        if self.expect_continue and not self._body_done:
            self.conn.write(responses.CONTINUE)
        conn = state.pool.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            state.spawn(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await self.state.pool.connect()
        except UpstreamError as exc:
            self.state.metrics.count_upstream_error(exc.kind)
            log.warning("upstream unreachable (%s): %s", exc.kind, exc)
            self._upstream_unavailable()
            return
        if self._finished or self.conn.closed:
            self.state.pool.release(conn, self.state.loop.time())
            return
        self._attach(conn)

    def _upstream_unavailable(self) -> None:
        if self._finished:
            return
        self._record_proxied(503)
        retry = str(self.state.settings.timeouts.retry_after_s).encode("ascii")
        self.answer(
            503,
            responses.text("the mail server is unreachable; try again later"),
            headers=((b"Retry-After", retry),),
        )

    def _attach(self, up: UpstreamConnection) -> None:
        self.upstream = up
        up.owner = self
        self._sent_at = self.state.loop.time()
        if self.chunked:
            pieces = [self._head]
            for chunk in self._pending:
                pieces += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            if self._body_done:
                pieces.append(b"0\r\n\r\n")
            up.write(b"".join(pieces))
        elif self._pending:
            up.write(b"".join([self._head, *self._pending]))
        else:
            up.write(self._head)
        self._pending = []
        if self._pending_bytes:
            self._pending_bytes = 0
            self.conn.resume_reading_for(self.conn.PAUSE_PENDING)
        if self.conn.write_paused:
            self._upstream_paused = True
            up.pause_reading()

    # Client body events (from the client connection's parser).
    def client_body(self, chunk: bytes) -> None:
        self.body_seen += len(chunk)
        if self._discarding or not chunk:  # an empty chunk would end a chunked body
            return
        replay = self._replay
        if replay is not None:
            if self.body_seen <= _REPLAY_LIMIT:
                replay.append(chunk)
            else:
                self._replay = None
        up = self.upstream
        if up is None:
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
            if self._pending_bytes > self.state.settings.limits.write_high_water:
                self.conn.pause_reading_for(self.conn.PAUSE_PENDING)
        elif self.chunked:
            up.write(b"".join((b"%x\r\n" % len(chunk), chunk, b"\r\n")))
        else:
            up.write(chunk)

    def client_body_end(self) -> None:
        self._body_done = True
        if self._discarding:
            if self._local_done:
                self._finish()
            return
        if self.upstream is not None and self.chunked:
            self.upstream.write(b"0\r\n\r\n")

    def upstream_pause_writing(self) -> None:
        self.conn.pause_reading_for(self.conn.PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.conn.resume_reading_for(self.conn.PAUSE_UPSTREAM)

    def client_pause_writing(self) -> None:
        if self.upstream is not None and not self._upstream_paused:
            self._upstream_paused = True
            self.upstream.pause_reading()

    def client_resume_writing(self) -> None:
        if self.upstream is not None and self._upstream_paused:
            self._upstream_paused = False
            self.upstream.resume_reading()

    # Upstream response events (from UpstreamConnection).
    def upstream_head(
        self,
        status: int,
        header_list: list[tuple[bytes, bytes, bytes]],
        length: int | None,
        chunked: bool,
        has_connection: bool,
    ) -> None:
        state = self.state
        self.conn.touch()
        command = self._facts.command if self._facts is not None else "autodiscover"
        state.metrics.observe_upstream(command or "OPTIONS", state.loop.time() - self._sent_at)
        if chunked:
            length = None
        no_body = status in (204, 304) or (length == 0 and not chunked)
        keep_alive = self.keep_alive and not state.closing
        if no_body:
            framing, length = _EMPTY, (None if status in (204, 304) else 0)
        elif length is not None:
            framing = _LENGTH
        elif self.http11:
            framing = _CHUNKED
        else:
            framing, keep_alive = _CLOSE, False
        self._upstream_until_close = not chunked and length is None and not no_body
        self._client_framing = framing
        self._closing = not keep_alive
        ms_location = None
        if status == 451:
            ms_location = self._rewrite_451(header_list)
        self.response_started = True
        state.metrics.count_response(status)
        self._record_proxied(status)
        self.conn.write(
            headers.client_response_head(
                status,
                responses.reason_phrase(status),
                header_list,
                content_length=length,
                chunked=framing == _CHUNKED,
                keep_alive=keep_alive,
                ms_location=ms_location,
                has_connection=has_connection,
            )
        )

    def _rewrite_451(self, header_list: list[tuple[bytes, bytes, bytes]]) -> bytes | None:
        settings = self.state.settings
        for lname, _, value in header_list:
            if lname == b"x-ms-location":
                new = headers.rewrite_ms_location(
                    value, settings.public_url, settings.redirect_allowed_hosts
                )
                if new != value:
                    log.warning(
                        "upstream answered 451 towards another host; X-MS-Location "
                        "rewritten to the gateway's public URL (check the upstream setting)"
                    )
                return new
        return None

    def upstream_body(self, chunk: bytes) -> None:
        if not chunk:
            return
        conn = self.conn
        conn.last_active = self.state.loop.time()  # a long download is not idle
        if self._client_framing == _CHUNKED:
            conn.write(b"".join((b"%x\r\n" % len(chunk), chunk, b"\r\n")))
        else:
            conn.write(chunk)

    def upstream_done(self) -> None:
        up, self.upstream = self.upstream, None
        if self._client_framing == _CHUNKED:
            self.conn.write(b"0\r\n\r\n")
        if up is not None:
            if self._upstream_paused:
                self._upstream_paused = False
                up.resume_reading()
            if self._body_done and not self._upstream_until_close:
                self.state.pool.release(up, self.state.loop.time())
            else:
                # Answered before the request body was sent: the connection's request
                # framing is unfinished, it cannot carry another request.
                up.close()
        if not self._body_done:
            # Drop the rest of the device's body; close after it if it is large.
            self._discarding = True
            self._closing = self._closing or self.expect_continue
        self._local_done = True
        if self._body_done or self._closing:
            self._finish()

    def upstream_failed(self, kind: str) -> None:
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
        if self._finished:
            return
        if self.response_started:
            if self._upstream_until_close and kind == "reset":
                self.upstream_done()  # a close-delimited body ends with the connection
                return
            # Mid-body failure: the device cannot be told; cut its connection so it
            # sees a truncated answer, not a wrong one.
            self.state.metrics.count_upstream_error(kind)
            self.conn.abort()
            return
        if (
            kind == "reset"
            and up is not None
            and up.reused
            and not self._retried
            and self._replay is not None
            and self._body_done
        ):
            # The pooled connection was closed by the upstream as we reused it: nothing
            # was answered, the whole request is in hand, send it again on a new one.
            self._retried = True
            self._pending = list(self._replay)
            self.state.spawn(self._connect())
            return
        self.state.metrics.count_upstream_error(kind)
        self._record_proxied(502)
        self.answer(502, responses.text("the mail server closed the connection"), close=True)

    # --- end -----------------------------------------------------------------------------
    def _record_proxied(self, status: int) -> None:
        facts, decision = self._facts, self._decision
        if facts is not None and decision is not None and not self._recorded:
            self._recorded = True
            events.record_decision(self.state.sink, self.state.node_id, facts, decision, status)

    def timed_out(self) -> None:
        """The connection's idle timeout fired while this request was in flight."""
        up, self.upstream = self.upstream, None
        if up is not None:
            up.owner = None
            up.abort()
        if not self.response_started:
            self.state.metrics.count_upstream_error("timeout")
            self._record_proxied(504)
            self.answer(504, responses.text("the mail server did not answer in time"), close=True)
        else:
            self.conn.abort()

    def connection_lost(self) -> None:
        """The device went away: release what this request holds."""
        up, self.upstream = self.upstream, None
        if up is not None:
            up.owner = None
            up.abort()
        self._finish()

    def connection_lost_before_start(self) -> None:
        """A pipelined request that never started: nothing to release."""
        self._finished = True

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        metrics = self.state.metrics
        metrics.in_flight -= 1
        if self.held:
            metrics.held -= 1
        self.conn.exchange_finished(self, close=self._closing)
