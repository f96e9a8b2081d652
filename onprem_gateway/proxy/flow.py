"""One request on a client connection, from its head to the end of its answer.

Theory of operation
-------------------
The client connection creates a ``RequestFlow`` when a request head is complete and calls
``start`` when it becomes the connection's current request (HTTP/1.1 answers go out in
request order; a pipelined request waits, its body buffered, with reading paused).
``start`` routes and decides synchronously (``core.request_admission``: parse, policy
lookup, decision, a few µs, returned as a value this class executes) and then either

- answers locally (404, 400, block, 401...): the answer is written at once; a body still
  arriving is read and dropped (``Phase.DRAINING``) so the connection stays usable, or the
  connection closes after the answer when that is cheaper or required (100-continue,
  a large body); or
- proxies: takes a pooled upstream connection (or opens one in a task: the only await on
  this path), writes the request head and streams the body as it arrives, then streams
  the response back. Each leg's write buffer pauses the other leg's reading
  (``pause_writing`` -> ``pause_reading``), so neither leg ever buffers a body.

Lifecycle: the flow's phase (queued, admitting, verifying a password, connecting,
forwarding, responding, draining, cutting, done) and what each event does in each phase
are one table, ``core.flow_lifecycle.TABLE``. The methods here turn what happens (the
admission's outcome, the upstream's progress, the device's body ending, a revocation,
the idle timeout, the device going away) into an ``Event``, feed it (``_feed``) and run
the ``Command``s the table names (``_RUN``); an event a phase does not expect raises.

Connection-oriented authentication (NTLM, Negotiate): a request that carries it, or
whose answer is a 401 offering it, makes its upstream connection private to this client
connection (``_make_private``): it never returns to the pool and carries this client's
later requests. An NTLM NEGOTIATE leg (``head_only``) is forwarded without its body
and without a decision; only a 401 may come back from it. The user of an AUTHENTICATE
leg is bound to the client connection once the server accepts it (any answer but 401).

Revocation: while admitted and unfinished, the flow is in the server's in-flight
index; ``recheck`` decides it again when the policy changes and ``revoke`` ends it: the
blocked answer if nothing was answered yet (a held Ping gets its status 129), else the
connection is cut.

Nothing here waits for the control plane, the disk or a lock. The only slow step,
verifying a device password (scrypt), runs in a thread and only on a cache miss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onprem_gateway.core.admission import redecide
from onprem_gateway.core.authentication import Presented
from onprem_gateway.core.block_responses import blocked_response
from onprem_gateway.core.credentials import Substitution, password_still_valid
from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.core.flow_lifecycle import (
    ANSWER_STARTED,
    DROPS_BODY,
    Command,
    Event,
    Phase,
    answer_event,
    head_event,
    step,
    upstream_done_event,
)
from onprem_gateway.core.identity import Binding, Identity, Source
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.request_admission import (
    BASIC_CHALLENGE,
    RULE_PW1,
    Answer,
    Block,
    Forward,
    ForwardHeadOnly,
    Reject,
    VerifyPassword,
    admit_request,
    after_password,
    raw,
)
from onprem_gateway.proxy import events, headers, responses
from onprem_gateway.proxy.substitution import Outcome as PasswordResult
from onprem_gateway.proxy.upstream import UpstreamConnection, UpstreamError
from seg_contract import Access, UserCredential

if TYPE_CHECKING:
    from onprem_gateway.proxy.client_side import ClientSide
    from onprem_gateway.proxy.state import ServerState

log = logging.getLogger(__name__)

# A request body we keep a copy of, so a request that met a pooled connection the
# upstream had just closed can be sent again on a fresh one (nothing was answered).
_REPLAY_LIMIT = 64 * 1024

# Response framing towards the device.
_LENGTH, _CHUNKED, _CLOSE, _EMPTY = 0, 1, 2, 3

# An upstream response head: status, headers, Content-Length, chunked, has Connection.
_ResponseHead = tuple[int, list[tuple[bytes, bytes, bytes]], int | None, bool, bool]


# The members the request path reads, bound once: on Python 3.11 reading an Enum
# class's attribute costs ~65 ns (its metaclass has a ``__getattr__``), a global ~6 ns.
_START, _VERIFY, _FORWARD = Event.START, Event.VERIFY, Event.FORWARD
_ATTACHED, _BODY_END = Event.UPSTREAM_ATTACHED, Event.CLIENT_BODY_END
_QUEUED, _VERIFYING = Phase.QUEUED, Phase.VERIFYING
_CONNECTING, _RESPONDING = Phase.CONNECTING, Phase.RESPONDING


class RequestFlow:
    __slots__ = (
        "_body_done",
        "_client_framing",
        "_closing",
        "_credential",
        "_decision",
        "_facts",
        "_handshake",
        "_head",
        "_head_only",
        "_identity",
        "_pending",
        "_pending_bytes",
        "_recorded",
        "_replay",
        "_retried",
        "_sent_at",
        "_tracked",
        "_upstream_paused",
        "_upstream_until_close",
        "body_seen",
        "chunked",
        "conn",
        "content_length",
        "expect_continue",
        "headers",
        "held",
        "http11",
        "keep_alive",
        "lookup",
        "method",
        "phase",
        "state",
        "target",
        "upstream",
    )

    def __init__(
        self,
        conn: ClientSide,
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
        self._identity: Identity | None = None
        self._handshake: Presented | None = None
        self._credential: UserCredential | None = None  # the PW1 record it was let in by
        self._tracked = ""  # the user it is indexed under while in flight ("" after)
        self.phase = _QUEUED  # where it is in its lifecycle (core.flow_lifecycle)
        # The facts beside the phase: the request body is complete; the connection
        # closes after this answer; the request is an NTLM NEGOTIATE leg, sent without
        # its body; the upstream's answer ends with its connection (RFC 9112 6.3 rule 8).
        self._body_done = not (chunked or content_length)
        self._closing = False
        self._head_only = False
        self._upstream_until_close = False
        self._recorded = False  # its access event is written
        self._head = b""
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._replay: list[bytes] | None = []
        self.body_seen = 0
        self._retried = False
        self._sent_at = 0.0
        self._client_framing = _LENGTH
        self._upstream_paused = False

    @property
    def response_started(self) -> bool:
        """Whether anything was written to the device as this request's answer."""
        return self.phase in ANSWER_STARTED

    def _feed(self, event: Event, detail: Any = None) -> None:
        """Move to the phase ``core.flow_lifecycle`` gives for ``event``; carry out its
        commands (``detail`` is what a command needs of the event)."""
        self.phase, commands = step(self.phase, event)
        for command in commands:
            _RUN[command](self, detail)

    # --- start: route, decide (``core.request_admission``), execute the outcome -------
    def start(self) -> None:
        self._feed(_START)
        state = self.state
        state.metrics.in_flight += 1
        policy = state.policy.current()
        outcome = admit_request(
            self.method,
            self.target,
            self.lookup,
            public_hosts=state.settings.public_hosts,
            bound=self.conn.binding,
            policy=policy,
            now=time.time(),
            verify_bearer=state.bearer.for_settings(policy.settings),
        )
        if isinstance(outcome, VerifyPassword):
            self._verify_password(outcome, policy)
        elif isinstance(outcome, ForwardHeadOnly):
            # NTLM NEGOTIATE: only the server's 401 CHALLENGE comes back (``upstream_head``).
            self._facts = outcome.facts
            self._handshake = outcome.handshake
            self.conn.binding = None  # a new handshake replaces what the connection proved
            self._proxy(None, head_only=True)
        elif isinstance(outcome, Block):
            facts, decision = outcome.facts, outcome.decision
            state.metrics.count_request(facts.command or facts.method, decision.access, True)
            events.record_decision(state.sink, state.node_id, facts, decision, outcome.status)
            self.answer(outcome.status, outcome.body, content_type=None, headers=outcome.headers)
        else:
            self._answer_locally(outcome)

    def _answer_locally(self, outcome: Answer | Reject) -> None:
        if isinstance(outcome, Answer):
            self.answer(outcome.status, responses.text(outcome.reason), headers=outcome.headers)
            return
        state = self.state
        refused = outcome.refused
        if outcome.counted_as:
            state.metrics.count_request(outcome.counted_as, Access.BLOCK, True)
        if outcome.limited:
            state.metrics.pw1_limited += 1
        events.record_rejected(
            state.sink,
            state.node_id,
            refused.facts,
            reason=refused.reason,
            rule=refused.rule,
            http_status=refused.status,
        )
        self.answer(refused.status, responses.text(refused.reason), headers=outcome.headers)

    def _verify_password(self, admitted: VerifyPassword, policy: PolicyIndex) -> None:
        state = self.state
        facts, decision = admitted.facts, admitted.decision
        self._facts, self._decision, self._identity = facts, decision, admitted.identity
        state.metrics.count_request(
            facts.command or facts.method, decision.access, decision.enforced
        )
        # From now on a policy change decides this request again (``recheck``).
        self._tracked = facts.user
        state.track(facts.user, self)
        if admitted.held:
            self.held = True
            state.metrics.held += 1
            self.conn.timeout = state.settings.timeouts.long_poll_idle_s
        result = state.substitution.evaluate(
            policy, facts, admitted.identity.presented, state.loop.time()
        )
        self._feed(_VERIFY)
        if result is None:
            self._proxy(None)  # no substitution for this user (``after_password``'s None)
        elif isinstance(result, asyncio.Future):
            result.add_done_callback(self._password_checked)
        else:
            self._after_password(result)

    def _password_checked(self, fut: asyncio.Future[PasswordResult]) -> None:
        if self.phase is not _VERIFYING or self.conn.closed:
            return  # revoked, timed out or gone meanwhile
        failed = fut.cancelled() or fut.exception()
        self._after_password(Substitution.REJECT if failed else fut.result())

    def _after_password(self, result: PasswordResult) -> None:
        assert self._facts is not None
        retry_after = self.state.settings.timeouts.retry_after_s
        outcome = after_password(result, self._facts, retry_after_s=retry_after)
        if isinstance(outcome, Forward):
            self._proxy(outcome.authorization)
        else:
            self._answer_locally(outcome)

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
            self._pending.clear()
            self._pending_bytes = 0
            self.conn.resume_reading_for(self.conn.PAUSE_PENDING)
        keep_alive = self.keep_alive and not close and not state.closing
        self._closing = not keep_alive
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
        self._feed(answer_event(self._body_done, self._closing))

    # --- proxying --------------------------------------------------------------------------
    def _proxy(self, authorization: bytes | None, *, head_only: bool = False) -> None:
        self._feed(_FORWARD)
        state = self.state
        settings = state.settings
        up_settings = settings.upstream
        host = state.upstream_authority
        if up_settings.preserve_host:
            host = self.lookup.get(b"host") or host
        if authorization is not None and self._facts is not None:
            self._credential = state.policy.current().credential(self._facts.user)
        xff, xfp = headers.forwarded_for(
            self.conn.peer_ip, self.headers, settings.trusted_proxies, settings.tls
        )
        chunked = self.chunked and not head_only
        if head_only:
            # An NTLM NEGOTIATE leg: the server answers it with a CHALLENGE before it
            # reads any body, so none is sent (what it would carry was not decided);
            # the device's body is read and dropped.
            self._head_only = True
            self._pending.clear()
            self._pending_bytes = 0
            self._replay = []  # nothing to replay: it can be sent again as it is
            length: int | None = 0
        elif chunked:
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
            chunked=chunked,
            authorization=authorization,
            has_connection=b"connection" in self.lookup,
            strip_forwarding=not self.conn.peer_trusted,
        )
        # The head is built: drop the parsed headers (a held Ping keeps its flow for
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
        private = self.conn.private_upstream
        if private is not None and private.owner is None and private.usable:
            # This client's own upstream connection (it may carry its NTLM identity).
            private.reused = True
            self._attach(private)
            return
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
            if self.phase is _CONNECTING:  # else answered or gone meanwhile
                self._feed(Event.UPSTREAM_UNREACHABLE)
            return
        if self.phase is not _CONNECTING or self.conn.closed:
            self.state.pool.release(conn, self.state.loop.time())
            return
        self._attach(conn)

    def _answer_unavailable(self, _: object) -> None:
        self._record_proxied(503)
        retry = str(self.state.settings.timeouts.retry_after_s).encode("ascii")
        self.answer(
            503,
            responses.text("the mail server is unreachable; try again later"),
            headers=((b"Retry-After", retry),),
        )

    def _attach(self, up: UpstreamConnection) -> None:
        self._feed(_ATTACHED)
        self.upstream = up
        up.owner = self
        presented = self._handshake or (self._identity.presented if self._identity else None)
        if presented is not None and presented.connection_bound:
            self._make_private(up)
        self._sent_at = self.state.loop.time()
        if self.chunked and not self._head_only:
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

    def _make_private(self, up: UpstreamConnection) -> None:
        """From now on ``up`` serves this client connection only (and closes with it)."""
        conn = self.conn
        if up.private_to is conn:
            return
        old = conn.private_upstream
        up.private_to = conn
        conn.private_upstream = up
        if old is not None and old is not up:
            old.private_to = None
            if old.owner is None:
                old.close()

    # Client body events (from the client connection's parser).
    def client_body(self, chunk: bytes) -> None:
        self.body_seen += len(chunk)
        # Dropped: a NEGOTIATE leg's body, or any once the answer is complete or cut.
        # (An empty chunk would end a chunked body.)
        if self._head_only or self.phase in DROPS_BODY or not chunk:
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
        self._feed(_BODY_END)

    def _end_upstream_body(self, _: object) -> None:
        up = self.upstream
        if up is not None and self.chunked and not self._head_only:
            up.write(b"0\r\n\r\n")

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
        self.conn.touch()
        up = self.upstream
        if up is not None and status == 401 and headers.asks_for_connection_auth(header_list):
            self._make_private(up)  # HAProxy's rule: the next legs must come back here
        event = head_event(status, head_only=self._head_only)
        self._feed(event, (status, header_list, length, chunked, has_connection))

    def _relay_head(self, head: _ResponseHead) -> None:
        status, header_list, length, chunked, has_connection = head
        state = self.state
        self._bind_identity(status)
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

    def _bind_identity(self, status: int) -> None:
        """What the server's answer says about the client connection's identity."""
        identity = self._identity
        if identity is None:
            return
        presented = identity.presented
        conn = self.conn
        if status == 401:
            if identity.source is Source.CONNECTION or (
                presented is not None and presented.connection_bound
            ):
                conn.binding = None  # the server does not (or no longer) accept it
        elif presented is not None and presented.connection_bound:
            # The server accepted an AUTHENTICATE (or a Kerberos ticket under
            # device_only): the connection is that user's until it closes.
            conn.binding = Binding(identity.user, identity.source is Source.NTLM)

    def _answer_not_relayed(self, head: _ResponseHead) -> None:
        log.warning(
            "the mail server answered an NTLM NEGOTIATE leg with %d instead of a 401 "
            "challenge; not relayed",
            head[0],
        )
        self.state.metrics.count_upstream_error("protocol")
        self.answer(
            502,
            responses.text("the mail server answered an unauthenticated request"),
            close=True,
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
        if not chunk or self.phase is not _RESPONDING:
            return
        conn = self.conn
        conn.last_active = self.state.loop.time()  # a long download is not idle
        if self._client_framing == _CHUNKED:
            conn.write(b"".join((b"%x\r\n" % len(chunk), chunk, b"\r\n")))
        else:
            conn.write(chunk)

    def upstream_done(self) -> None:
        if not self._body_done:
            # The rest of the device's body is dropped; close after it if it is large (a
            # NEGOTIATE leg keeps its connection: the next leg must come on it), or if
            # after an Expect: 100-continue it may never come (RFC 9110 10.1.1).
            if self._head_only:
                remaining = (self.content_length or 0) - self.body_seen
                limit = self.state.settings.limits.max_discard_bytes
                self._closing = self._closing or self.chunked or remaining > limit
            else:
                self._closing = self._closing or self.expect_continue
        self._feed(upstream_done_event(self._body_done, self._closing))

    def _end_response(self, _: object) -> None:
        if self._client_framing == _CHUNKED:
            self.conn.write(b"0\r\n\r\n")

    def _release_upstream(self, _: object) -> None:
        up, self.upstream = self.upstream, None
        if up is None:
            return
        if self._upstream_paused:
            self._upstream_paused = False
            up.resume_reading()
        # The upstream request is complete when the device's body was all sent, or when
        # none was due (a NEGOTIATE leg).
        reusable = (self._body_done or self._head_only) and not self._upstream_until_close
        if up.private_to is self.conn:
            if not (reusable and up.usable and not self.conn.closed):
                self._drop_private(up)
                up.close()
        elif reusable:
            self.state.pool.release(up, self.state.loop.time())
        else:
            # Answered before the request body was sent: the connection's request
            # framing is unfinished, it cannot carry another request.
            up.close()

    def _drop_private(self, up: UpstreamConnection) -> None:
        conn = self.conn
        up.private_to = None
        if conn.private_upstream is up:
            conn.private_upstream = None
            conn.binding = None

    def upstream_failed(self, kind: str) -> None:
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
        phase = self.phase
        if phase is Phase.DONE:
            return
        if phase is _RESPONDING:
            if self._upstream_until_close and kind == "reset":
                self.upstream_done()  # a close-delimited body ends with the connection
                return
            # Mid-body failure: the device cannot be told (``Command.CUT``).
            self.state.metrics.count_upstream_error(kind)
            self._feed(Event.UPSTREAM_FAILED)
        elif (
            kind == "reset"
            and up is not None
            and up.reused
            and not self._retried
            and self._replay is not None
            and (self._body_done or self._head_only)
        ):
            # The pooled connection was closed by the upstream as we reused it: nothing
            # was answered, the whole request is in hand, send it again on a new one.
            self._feed(Event.UPSTREAM_RETRY)
        else:
            self.state.metrics.count_upstream_error(kind)
            self._feed(Event.UPSTREAM_FAILED)

    def _retry(self, _: object) -> None:
        self._retried = True
        self._pending = list(self._replay or ())
        self.state.spawn(self._connect())

    def _answer_bad_gateway(self, _: object) -> None:
        self._record_proxied(502)
        self.answer(502, responses.text("the mail server closed the connection"), close=True)

    # --- revocation ------------------------------------------------------------------------
    def recheck(self, policy: PolicyIndex, now: float) -> int:
        """Decide this in-flight request again with ``policy``; end it (1) if the policy
        no longer admits it, or if the device password it was let in by is gone."""
        facts, identity = self._facts, self._identity
        if not self._tracked or facts is None or identity is None:
            return 0  # finished, or revoked already
        decision = redecide(facts, identity.source, policy, now)
        if decision.effective is not Access.ALLOW:
            self.revoke(decision)
            return 1
        old = self._credential
        if old is not None and not password_still_valid(
            old, policy.credential(facts.user), facts.device_id
        ):
            self.revoke(
                Decision(Access.BLOCK, "its device password was withdrawn", RULE_PW1),
                password_withdrawn=True,
            )
            return 1
        return 0

    def revoke(self, decision: Decision, *, password_withdrawn: bool = False) -> None:
        """End this request now: the blocked answer for its command and protocol version
        (``core.block_responses``; a 401 when its device password was withdrawn) if
        nothing was answered yet, else cut the device's connection (a half-sent answer
        cannot be replaced)."""
        # Out of the in-flight index: one revocation per request.
        self.state.untrack(self._tracked, self)
        self._tracked = ""
        self._feed(Event.REVOKED, (decision, password_withdrawn))

    def _cut_revoked(self, revocation: tuple[Decision, bool]) -> None:
        facts = self._facts
        assert facts is not None
        state = self.state
        state.metrics.count_revoked("closed")
        events.record_revoked(state.sink, state.node_id, facts, revocation[0], 0)
        self.conn.abort()

    def _answer_revoked(self, revocation: tuple[Decision, bool]) -> None:
        facts = self._facts
        assert facts is not None
        decision, password_withdrawn = revocation
        state = self.state
        state.metrics.count_revoked("answered")
        if password_withdrawn:
            events.record_revoked(state.sink, state.node_id, facts, decision, 401)
            self.answer(
                401, responses.text("the device password was withdrawn"), headers=BASIC_CHALLENGE
            )
            return
        block = blocked_response(facts, decision)
        events.record_revoked(state.sink, state.node_id, facts, decision, block.status)
        self._recorded = True
        self.answer(block.status, block.body, content_type=None, headers=raw(block.headers))

    # --- end -----------------------------------------------------------------------------
    def _record_proxied(self, status: int) -> None:
        facts, decision = self._facts, self._decision
        if facts is not None and decision is not None and not self._recorded:
            self._recorded = True
            events.record_decision(self.state.sink, self.state.node_id, facts, decision, status)

    def timed_out(self) -> None:
        """The connection's idle timeout fired while this request was in flight."""
        self._feed(Event.TIMED_OUT)

    def _answer_timeout(self, _: object) -> None:
        self.state.metrics.count_upstream_error("timeout")
        self._record_proxied(504)
        self.answer(504, responses.text("the mail server did not answer in time"), close=True)

    def connection_lost(self) -> None:
        """The device went away: release what this request holds (nothing if it never
        started)."""
        self._feed(Event.CLIENT_LOST)

    def _drop_upstream(self, _: object) -> None:
        """The upstream request is unfinished: that connection cannot be reused."""
        up, self.upstream = self.upstream, None
        if up is not None:
            up.owner = None
            if up.private_to is self.conn:
                self._drop_private(up)
            up.abort()

    def _cut(self, _: object) -> None:
        self.conn.abort()

    def _finish(self, _: object) -> None:
        state = self.state
        metrics = state.metrics
        metrics.in_flight -= 1
        if self.held:
            metrics.held -= 1
        if self._tracked:
            state.untrack(self._tracked, self)
            self._tracked = ""
        self.conn.flow_finished(self, close=self._closing)


# What each command of ``core.flow_lifecycle`` runs, indexed by the command.
_RUNNERS: dict[Command, Callable[[RequestFlow, Any], None]] = {
    Command.FINISH: RequestFlow._finish,
    Command.DROP_UPSTREAM: RequestFlow._drop_upstream,
    Command.RELEASE_UPSTREAM: RequestFlow._release_upstream,
    Command.RELAY_HEAD: RequestFlow._relay_head,
    Command.END_RESPONSE: RequestFlow._end_response,
    Command.END_UPSTREAM_BODY: RequestFlow._end_upstream_body,
    Command.RETRY: RequestFlow._retry,
    Command.ANSWER_UNAVAILABLE: RequestFlow._answer_unavailable,
    Command.ANSWER_BAD_GATEWAY: RequestFlow._answer_bad_gateway,
    Command.ANSWER_NOT_RELAYED: RequestFlow._answer_not_relayed,
    Command.ANSWER_TIMEOUT: RequestFlow._answer_timeout,
    Command.ANSWER_REVOKED: RequestFlow._answer_revoked,
    Command.CUT_REVOKED: RequestFlow._cut_revoked,
    Command.CUT: RequestFlow._cut,
}
_RUN = tuple(_RUNNERS[command] for command in Command)
