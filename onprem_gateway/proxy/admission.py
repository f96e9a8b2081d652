"""Admission of one request: route it, parse and decide it, check its device password.

The first step of an ``Exchange`` (``exchange.py``), kept apart so each file reads on its
own: everything here is synchronous and cheap (a few µs: the query parse, a dict lookup
in the policy, the decision), except a PW1 verification on a cache miss, which runs in a
thread and resumes the exchange from a future callback. The outcome is always one call:
``answer`` (a local response), ``_proxy`` (forward) or ``_reject_password`` (401).

Routes: ``/Microsoft-Server-ActiveSync`` (POST and OPTIONS, MS-ASHTTP 2.2.1.1.1; any
other method is 405), ``/autodiscover/autodiscover.xml`` in any case (passed through,
never decided), everything else 404.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from onprem_gateway.core.block_responses import blocked_response
from onprem_gateway.core.decision import decide
from onprem_gateway.core.eas_request import EasRequestError, parse
from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.proxy import events, responses
from onprem_gateway.proxy.settings import LONG_POLL_COMMANDS
from onprem_gateway.proxy.substitution import REJECT, Outcome, Substitution
from seg_contract import Access

if TYPE_CHECKING:
    from onprem_gateway.proxy.connection import ClientConnection
    from onprem_gateway.proxy.state import ServerState

EAS_PATH = b"/microsoft-server-activesync"
AUTODISCOVER_PATH = b"/autodiscover/autodiscover.xml"
_EAS_METHODS = (b"POST", b"OPTIONS")
# The request headers ``eas_request.parse`` reads.
_EAS_HEADERS = (
    (b"user-agent", "user-agent"),
    (b"authorization", "authorization"),
    (b"ms-asprotocolversion", "ms-asprotocolversion"),
    (b"x-ms-policykey", "x-ms-policykey"),
)
_AUTODISCOVER_METHODS = (b"POST", b"GET")


class Admission:
    """Base of ``Exchange``: what admission writes lives here, what it reads is
    ``Exchange``'s (annotated below for the type checker)."""

    __slots__ = ("_decision", "_facts", "held")
    state: ServerState
    conn: ClientConnection
    method: bytes
    target: bytes
    lookup: dict[bytes, bytes]
    held: bool
    _facts: RequestFacts | None
    _decision: Decision | None
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

        def _proxy(self, authorization: bytes | None) -> None: ...

    # --- start: route, decide ----------------------------------------------------------
    def start(self) -> None:
        state = self.state
        state.metrics.in_flight += 1
        path = self.target.split(b"?", 1)[0].lower()
        if path == EAS_PATH:
            if self.method not in _EAS_METHODS:
                self._method_not_allowed(b"OPTIONS, POST")
                return
            self._start_eas()
        elif path == AUTODISCOVER_PATH:
            # Autodiscover (MS-OXDSCLI) is not an EAS command: not decided, passed through.
            if self.method not in _AUTODISCOVER_METHODS:
                self._method_not_allowed(b"GET, POST")
                return
            self._proxy(None)
        else:
            self.answer(404, responses.text("not found: this gateway serves Exchange ActiveSync"))

    def _method_not_allowed(self, allow: bytes) -> None:
        self.answer(405, responses.text("method not allowed"), headers=((b"Allow", allow),))

    def _start_eas(self) -> None:
        state = self.state
        lookup = self.lookup
        hdrs = {name: lookup[raw].decode("latin-1") for raw, name in _EAS_HEADERS if raw in lookup}
        try:
            facts = parse(self.method.decode("ascii"), self.target.decode("latin-1"), hdrs)
        except EasRequestError as exc:
            state.metrics.count_request("malformed", "block", True)
            events.record_rejected(
                state.sink,
                state.node_id,
                None,
                reason=exc.reason,
                rule="malformed",
                http_status=400,
            )
            self.answer(400, responses.text(f"bad EAS request: {exc.reason}"))
            return
        self._facts = facts
        policy = state.policy.current()
        decision = decide(facts, policy, time.time())
        state.metrics.count_request(
            facts.command or facts.method, decision.access, decision.enforced
        )
        if decision.effective is not Access.ALLOW:
            block = blocked_response(facts, decision)
            events.record_decision(state.sink, state.node_id, facts, decision, block.status)
            self.answer(block.status, block.body, content_type=None, headers=_raw(block.headers))
            return
        self._decision = decision
        if facts.command in LONG_POLL_COMMANDS:
            self.held = True
            state.metrics.held += 1
            self.conn.timeout = state.settings.timeouts.long_poll_idle_s
        outcome = state.substitution.evaluate(policy, facts, hdrs.get("authorization"))
        if isinstance(outcome, asyncio.Future):
            outcome.add_done_callback(self._substitution_ready)
        else:
            self._substituted(outcome)

    def _substitution_ready(self, fut: asyncio.Future[Outcome]) -> None:
        if self._finished or self.conn.closed:
            return
        self._substituted(REJECT if fut.cancelled() or fut.exception() else fut.result())

    def _substituted(self, result: Outcome) -> None:
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
            self._reject_password(self._facts)

    def _reject_password(self, facts: RequestFacts) -> None:
        # A wrong device password (PW1) is never forwarded: the upstream would count it
        # against the real account's lockout. 401 + Basic challenge (MS-ASHTTP 3.1.5.2).
        events.record_rejected(
            self.state.sink,
            self.state.node_id,
            facts,
            reason="wrong device password",
            rule="pw1",
            http_status=401,
        )
        self.answer(
            401,
            responses.text("wrong device password"),
            headers=((b"WWW-Authenticate", b'Basic realm="Exchange ActiveSync"'),),
        )


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
