"""Admission of one request: route it, check its Host, identify and decide it
(``core.admission.admit``), check its device password.

The first step of a ``RequestFlow`` (``flow.py``), kept apart so each file reads on its
own: everything here is synchronous and cheap (a few µs: the query parse, the identity,
a dict lookup in the policy, the decision), except a PW1 verification on a cache miss,
which runs in a thread and resumes the flow from a future callback. The outcome is
always one call: ``answer`` (a local response), ``_proxy`` (forward), or
``_proxy(..., head_only=True)`` for an NTLM handshake leg.

Routes: ``/Microsoft-Server-ActiveSync`` (POST and OPTIONS, MS-ASHTTP 2.2.1.1.1; any
other method is 405), ``/autodiscover/autodiscover.xml`` in any case (GET and POST,
decided by user like OPTIONS), everything else 404. A Host that is not one of the
public names is answered 421 before anything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from onprem_gateway.core.admission import (
    Admitted,
    Blocked,
    HandshakeLeg,
    Outcome,
    Refused,
    admit,
)
from onprem_gateway.core.authentication import Presented
from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.core.identity import Identity
from onprem_gateway.proxy import events, responses
from onprem_gateway.proxy.headers import host_name
from onprem_gateway.proxy.settings import LONG_POLL_COMMANDS
from onprem_gateway.proxy.substitution import REJECT, Substitution
from onprem_gateway.proxy.substitution import Outcome as SubOutcome
from seg_contract import Access, UnverifiableIdentity

if TYPE_CHECKING:
    from onprem_gateway.proxy.client_side import ClientSide
    from onprem_gateway.proxy.state import ServerState

EAS_PATH = b"/microsoft-server-activesync"
AUTODISCOVER_PATH = b"/autodiscover/autodiscover.xml"
_EAS_METHODS = (b"POST", b"OPTIONS")
# The request headers ``core.admission.admit`` reads.
_ADMISSION_HEADERS = (
    (b"user-agent", "user-agent"),
    (b"authorization", "authorization"),
    (b"ms-asprotocolversion", "ms-asprotocolversion"),
    (b"x-ms-policykey", "x-ms-policykey"),
)
_AUTODISCOVER_METHODS = (b"POST", b"GET")
_REALM = b'Basic realm="Exchange ActiveSync"'


class Admission:
    """Base of ``RequestFlow``: what admission writes lives here, what it reads is
    ``RequestFlow``'s (annotated below for the type checker)."""

    __slots__ = ("_decision", "_facts", "_handshake", "_identity", "_revoked", "_tracked", "held")
    state: ServerState
    conn: ClientSide
    method: bytes
    target: bytes
    lookup: dict[bytes, bytes]
    held: bool
    _facts: RequestFacts | None
    _decision: Decision | None
    _identity: Identity | None
    _handshake: Presented | None
    _tracked: str
    _revoked: bool
    _finished: bool

    if TYPE_CHECKING:

        def answer(
            self,
            status: int,
            body: bytes,
            *,
            content_type: bytes | None = ...,
            headers: tuple[tuple[bytes, bytes], ...] = ...,
            close: bool = ...,
        ) -> None: ...

        def _proxy(self, authorization: bytes | None, *, head_only: bool = ...) -> None: ...

    # --- start: route, decide ----------------------------------------------------------
    def start(self) -> None:
        state = self.state
        state.metrics.in_flight += 1
        public = state.settings.public_hosts
        if public:
            host = self.lookup.get(b"host")
            if host is None:
                self.answer(400, responses.text("a Host header is required"))
                return
            if host_name(host) not in public:
                self.answer(421, responses.text("this gateway does not serve that host name"))
                return
        path = self.target.split(b"?", 1)[0].lower()
        if path == EAS_PATH:
            if self.method not in _EAS_METHODS:
                self._method_not_allowed(b"OPTIONS, POST")
                return
            self._admit(autodiscover=False)
        elif path == AUTODISCOVER_PATH:
            if self.method not in _AUTODISCOVER_METHODS:
                self._method_not_allowed(b"GET, POST")
                return
            self._admit(autodiscover=True)
        else:
            self.answer(404, responses.text("not found: this gateway serves Exchange ActiveSync"))

    def _method_not_allowed(self, allow: bytes) -> None:
        self.answer(405, responses.text("method not allowed"), headers=((b"Allow", allow),))

    def _admit(self, *, autodiscover: bool) -> None:
        state = self.state
        lookup = self.lookup
        hdrs = {
            name: lookup[raw].decode("latin-1") for raw, name in _ADMISSION_HEADERS if raw in lookup
        }
        policy = state.policy.current()
        outcome: Outcome = admit(
            self.method.decode("ascii"),
            self.target.decode("latin-1"),
            hdrs,
            autodiscover=autodiscover,
            bound=self.conn.binding,
            policy=policy,
            now=time.time(),
            verify_bearer=state.bearer.for_settings(policy.settings),
        )
        if isinstance(outcome, Admitted):
            self._admitted(outcome, policy)
        elif isinstance(outcome, Blocked):
            facts, decision, block = outcome.facts, outcome.decision, outcome.response
            state.metrics.count_request(facts.command or facts.method, decision.access, True)
            events.record_decision(state.sink, state.node_id, facts, decision, block.status)
            self.answer(block.status, block.body, content_type=None, headers=_raw(block.headers))
        elif isinstance(outcome, HandshakeLeg):
            # NTLM NEGOTIATE: no identity yet, nothing decided, nothing recorded; only the
            # server's 401 CHALLENGE comes back (``RequestFlow.upstream_head``).
            self._facts = outcome.facts
            self._handshake = outcome.handshake.presented
            self.conn.binding = None  # a new handshake replaces what the connection proved
            self._proxy(None, head_only=True)
        else:
            self._refused(outcome)

    def _refused(self, refused: Refused) -> None:
        state = self.state
        facts = refused.facts
        state.metrics.count_request(
            (facts.command or facts.method) if facts else refused.rule, Access.BLOCK, True
        )
        events.record_rejected(
            state.sink,
            state.node_id,
            facts,
            reason=refused.reason,
            rule=refused.rule,
            http_status=refused.status,
        )
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if refused.challenge:
            headers = self._challenges(refused.bearer_error)
        self.answer(refused.status, responses.text(refused.reason), headers=headers)

    def _challenges(self, bearer_error: str = "") -> tuple[tuple[bytes, bytes], ...]:
        """The schemes the gateway can verify for this cluster, strongest first as
        clients pick the first they support (RFC 9110 11.6.1): Bearer when issuers are
        configured, NTLM, Negotiate only when unverifiable identities may be admitted,
        Basic last."""
        settings = self.state.policy.current().settings
        out: list[tuple[bytes, bytes]] = []
        if settings.bearer_issuers:
            value = b"Bearer"
            if bearer_error:
                value += b' error="' + bearer_error.encode("ascii") + b'"'
            out.append((b"WWW-Authenticate", value))
        out.append((b"WWW-Authenticate", b"NTLM"))
        if settings.unverifiable_identity is UnverifiableIdentity.DEVICE_ONLY:
            out.append((b"WWW-Authenticate", b"Negotiate"))
        out.append((b"WWW-Authenticate", _REALM))
        return tuple(out)

    def _admitted(self, admitted: Admitted, policy: object) -> None:
        state = self.state
        facts, decision = admitted.facts, admitted.decision
        self._facts, self._decision, self._identity = facts, decision, admitted.identity
        state.metrics.count_request(
            facts.command or facts.method, decision.access, decision.enforced
        )
        # From now on a policy change decides this request again (``recheck``).
        self._tracked = facts.user
        state.track(facts.user, self)  # type: ignore[arg-type]
        if facts.command in LONG_POLL_COMMANDS:
            self.held = True
            state.metrics.held += 1
            self.conn.timeout = state.settings.timeouts.long_poll_idle_s
        outcome = state.substitution.evaluate(
            state.policy.current(), facts, admitted.identity.presented, state.loop.time()
        )
        if isinstance(outcome, asyncio.Future):
            outcome.add_done_callback(self._substitution_ready)
        else:
            self._substituted(outcome)

    def _substitution_ready(self, fut: asyncio.Future[SubOutcome]) -> None:
        if self._finished or self._revoked or self.conn.closed:
            return
        self._substituted(REJECT if fut.cancelled() or fut.exception() else fut.result())

    def _substituted(self, result: SubOutcome) -> None:
        if result is None or isinstance(result, bytes):
            self._proxy(result)
        elif result is Substitution.UNAVAILABLE:
            self.answer(
                503,
                responses.text("credential substitution is unavailable on this node"),
                headers=(
                    (b"Retry-After", str(self.state.settings.timeouts.retry_after_s).encode()),
                ),
            )
        else:
            assert self._facts is not None
            self._reject_password(self._facts, limited=result is Substitution.LIMITED)

    def _reject_password(self, facts: RequestFacts, *, limited: bool = False) -> None:
        # A wrong device password (PW1) is never forwarded: the upstream would count it
        # against the real account's lockout. 401 + Basic challenge (MS-ASHTTP 3.1.5.2).
        if limited:
            self.state.metrics.pw1_limited += 1
            reason = "too many wrong device passwords for this user or device; try later"
        else:
            reason = "wrong device password"
        events.record_rejected(
            self.state.sink,
            self.state.node_id,
            facts,
            reason=reason,
            rule="pw1",
            http_status=401,
        )
        self.answer(401, responses.text(reason), headers=((b"WWW-Authenticate", _REALM),))


def _raw(pairs: object) -> tuple[tuple[bytes, bytes], ...]:
    """A block answer's headers as bytes pairs, minus framing (we set Content-Length)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = []
    for name, value in items:  # type: ignore[attr-defined]
        name_b = name if isinstance(name, bytes) else str(name).encode("latin-1")
        if name_b.lower() in (b"content-length", b"transfer-encoding", b"connection"):
            continue
        value_b = value if isinstance(value, bytes) else str(value).encode("latin-1")
        out.append((name_b, value_b))
    return tuple(out)
