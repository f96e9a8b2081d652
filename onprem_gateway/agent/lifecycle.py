"""The control-plane WebSocket connection as a table-driven state machine (no I/O).

Theory of operation
-------------------
The link owns one WebSocket to the control plane. Everything that can happen to it is an
``Event``; ``Lifecycle.handle(event)`` looks the pair (state, event) up in ``TRANSITIONS``
and returns the ``Command``s the asyncio loop (``agent/link.py``) must execute, in order.
The loop never decides anything itself: it turns socket outcomes, timers and messages
into events and executes commands, so every decision here is unit-tested without a
network.

    IDLE --START--> CONNECTING --CONNECTED--> CONNECTED --LOST / PONG_OVERDUE--> BACKING_OFF
                     |  |  ^                     |  |                              |
                     |  |  +----RECONNECT_DUE----+  +--REVOKED_PUSH--> REVOKED      |
                     |  |  +------------------BACKOFF_ELAPSED------------------------+
                     |  +--CONNECT_FAILED--> BACKING_OFF                            ^
                     |  +--CONNECT_REJECTED (401/403 marked by the control plane)--> REJECTED
                     +--CONNECT_REFUSED_UNMARKED (401/403 without the mark)         |
                          --> CHECKING_CREDENTIAL --CREDENTIAL_REJECTED--> REJECTED  |
                                                  --CREDENTIAL_NOT_REJECTED----------+
    any state --STOP--> STOPPED

- After every successful (re)connect the node fetches a delta since its applied version
  (pushes sent while it was away are lost otherwise), resets the backoff and sends a
  keepalive at once: a handshake proves little (a control plane can accept connections
  and still answer nothing), the first pong proves the path works, verifies the digest
  without waiting a whole report interval, and ends an "unresponsive" state promptly.
- Keepalives go every report interval, each carrying the policy digest. A pong must
  come within the pong deadline; when none does (PONG_OVERDUE) the control plane is
  treated as unresponsive: the connection is closed and replaced after a backoff. A
  frozen control plane is noticed within one report interval plus the deadline, not
  after minutes of TCP retransmissions.
- A planned reconnect (API Gateway closes every connection after 2 hours) closes and
  connects again at once, without backoff; the delta fetch after it closes any gap.
- A push that reveals a gap, a ``resync`` push, or a pong whose version is ahead of the
  applied one lead to a delta fetch. A ``diverged`` verdict (or the node finding that
  it holds a version the control plane has not committed for a whole report interval)
  and a ``resync`` with ``full`` lead to a full snapshot that *replaces* the policy. In
  any other state these are ignored (a message can still be in flight while the
  connection closes).
- Fatal, because the credential is no longer good and reconnecting would only hammer
  the control plane: a ``revoked`` push, and a 401/403 the control plane marks as its
  own. An unmarked 401/403 on the handshake may still be ours (API Gateway does not
  reliably pass a $connect answer's headers on): one HTTP call to the policy route,
  whose answers do keep their headers, decides. Without the mark there too, it came
  from a proxy or WAF in the path: back off and retry.
- REJECTED, REVOKED and STOPPED are terminal: only STOP is accepted there (a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from onprem_gateway.core.backoff import Retry, classify


class State(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CHECKING_CREDENTIAL = "checking_credential"  # an unmarked 401/403: asking the API
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    REJECTED = "rejected"  # the control plane refused the credential
    REVOKED = "revoked"  # the control plane said so over the connection
    STOPPED = "stopped"


class Event(StrEnum):
    START = "start"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"  # network error, timeout, 5xx, 429: retryable
    CONNECT_REJECTED = "connect_rejected"  # 401/403 marked by the control plane: fatal
    CONNECT_REFUSED_UNMARKED = "connect_refused_unmarked"  # 401/403 without the mark
    CREDENTIAL_REJECTED = "credential_rejected"  # the policy route confirmed the refusal
    CREDENTIAL_NOT_REJECTED = "credential_not_rejected"  # it did not: a proxy or WAF
    LOST = "lost"  # the open connection closed or failed
    KEEPALIVE_DUE = "keepalive_due"
    PONG_OVERDUE = "pong_overdue"  # no pong within the deadline after a keepalive
    RECONNECT_DUE = "reconnect_due"  # planned, before API Gateway's 2-hour limit
    BACKOFF_ELAPSED = "backoff_elapsed"
    PUSH_GAP = "push_gap"  # a push's version skipped ahead of the applied version
    RESYNC = "resync"  # the control plane asked for a delta fetch
    RESYNC_FULL = "resync_full"  # ... or for a full snapshot replacing the policy
    PONG_AHEAD = "pong_ahead"  # a pong names a version above the applied one
    DIVERGED = "diverged"  # the policy cannot be trusted: replace it with a snapshot
    REVOKED_PUSH = "revoked_push"
    STOP = "stop"


class Command(StrEnum):
    CONNECT = "connect"
    CLOSE = "close"
    SEND_KEEPALIVE = "send_keepalive"
    FETCH_DELTA = "fetch_delta"
    FETCH_REPLACEMENT = "fetch_replacement"  # a full snapshot that replaces the policy
    CONFIRM_CREDENTIAL = "confirm_credential"  # one HTTP call: CREDENTIAL_(NOT_)REJECTED
    RESET_BACKOFF = "reset_backoff"
    SLEEP_BACKOFF = "sleep_backoff"  # wait the next backoff delay, then BACKOFF_ELAPSED
    ARM_TIMERS = "arm_timers"  # start the keepalive and planned-reconnect clocks
    REPORT_UNRESPONSIVE = "report_unresponsive"  # health and metrics say so until a pong
    REPORT_FATAL = "report_fatal"  # mark the node not ready (credential refused)


S, E, C = State, Event, Command
_ACTIVE = (S.IDLE, S.CONNECTING, S.CHECKING_CREDENTIAL, S.CONNECTED, S.BACKING_OFF)

TRANSITIONS: dict[tuple[State, Event], tuple[State, tuple[Command, ...]]] = {
    (S.IDLE, E.START): (S.CONNECTING, (C.CONNECT,)),
    (S.CONNECTING, E.CONNECTED): (
        S.CONNECTED,
        (C.RESET_BACKOFF, C.ARM_TIMERS, C.FETCH_DELTA, C.SEND_KEEPALIVE),
    ),
    (S.CONNECTING, E.CONNECT_FAILED): (S.BACKING_OFF, (C.SLEEP_BACKOFF,)),
    (S.CONNECTING, E.CONNECT_REJECTED): (S.REJECTED, (C.REPORT_FATAL,)),
    (S.CONNECTING, E.CONNECT_REFUSED_UNMARKED): (S.CHECKING_CREDENTIAL, (C.CONFIRM_CREDENTIAL,)),
    (S.CHECKING_CREDENTIAL, E.CREDENTIAL_REJECTED): (S.REJECTED, (C.REPORT_FATAL,)),
    (S.CHECKING_CREDENTIAL, E.CREDENTIAL_NOT_REJECTED): (S.BACKING_OFF, (C.SLEEP_BACKOFF,)),
    (S.CONNECTED, E.KEEPALIVE_DUE): (S.CONNECTED, (C.SEND_KEEPALIVE,)),
    (S.CONNECTED, E.PONG_OVERDUE): (
        S.BACKING_OFF,
        (C.REPORT_UNRESPONSIVE, C.CLOSE, C.SLEEP_BACKOFF),
    ),
    (S.CONNECTED, E.RECONNECT_DUE): (S.CONNECTING, (C.CLOSE, C.CONNECT)),
    (S.CONNECTED, E.LOST): (S.BACKING_OFF, (C.CLOSE, C.SLEEP_BACKOFF)),
    (S.CONNECTED, E.PUSH_GAP): (S.CONNECTED, (C.FETCH_DELTA,)),
    (S.CONNECTED, E.RESYNC): (S.CONNECTED, (C.FETCH_DELTA,)),
    (S.CONNECTED, E.PONG_AHEAD): (S.CONNECTED, (C.FETCH_DELTA,)),
    (S.CONNECTED, E.RESYNC_FULL): (S.CONNECTED, (C.FETCH_REPLACEMENT,)),
    (S.CONNECTED, E.DIVERGED): (S.CONNECTED, (C.FETCH_REPLACEMENT,)),
    (S.CONNECTED, E.REVOKED_PUSH): (S.REVOKED, (C.CLOSE, C.REPORT_FATAL)),
    (S.BACKING_OFF, E.BACKOFF_ELAPSED): (S.CONNECTING, (C.CONNECT,)),
}
# Stopping is allowed from everywhere; from a terminal state it does nothing more.
for _state in _ACTIVE:
    TRANSITIONS[(_state, E.STOP)] = (S.STOPPED, (C.CLOSE,))
for _state in (S.REJECTED, S.REVOKED, S.STOPPED):
    TRANSITIONS[(_state, E.STOP)] = (S.STOPPED, ())
# Messages and timers that race with a closing connection are harmless: ignored.
_LATE = (
    E.KEEPALIVE_DUE,
    E.PONG_OVERDUE,
    E.RECONNECT_DUE,
    E.PUSH_GAP,
    E.RESYNC,
    E.RESYNC_FULL,
    E.PONG_AHEAD,
    E.DIVERGED,
    E.LOST,
)
for _state in (
    S.CONNECTING,
    S.CHECKING_CREDENTIAL,
    S.BACKING_OFF,
    S.REJECTED,
    S.REVOKED,
    S.STOPPED,
):
    for _event in _LATE:
        TRANSITIONS.setdefault((_state, _event), (_state, ()))

TERMINAL = frozenset({S.REJECTED, S.REVOKED, S.STOPPED})


class LifecycleError(RuntimeError):
    """An event that cannot happen in the current state (a bug in the loop)."""


@dataclass
class Lifecycle:
    state: State = State.IDLE
    history: list[tuple[State, Event, State]] = field(default_factory=list)

    def handle(self, event: Event) -> tuple[Command, ...]:
        try:
            new_state, commands = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LifecycleError(f"event {event} is not valid in state {self.state}") from None
        self.history.append((self.state, event, new_state))
        del self.history[:-50]  # a short trail for diagnostics, bounded
        self.state = new_state
        return commands

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


# --- the clocks of an open connection ---------------------------------------------------


@dataclass(frozen=True)
class ConnectionClock:
    """When the next timer event of an open connection is due (all times monotonic).

    ``connected_at`` is when the connection opened, ``last_sent_at`` when the node last
    sent a keepalive (or connected), ``awaiting_since`` when the oldest keepalive still
    without a pong was sent (None: every keepalive is answered). When several are due at
    once, the planned reconnect wins, then the overdue pong, then the keepalive.
    """

    connected_at: float
    last_sent_at: float
    keepalive_interval_s: float
    reconnect_after_s: float
    pong_timeout_s: float = 10.0
    awaiting_since: float | None = None

    def next_due(self) -> tuple[float, Event]:
        due = [
            (self.connected_at + self.reconnect_after_s, 0, Event.RECONNECT_DUE),
            (self.last_sent_at + self.keepalive_interval_s, 2, Event.KEEPALIVE_DUE),
        ]
        if self.awaiting_since is not None:
            due.append((self.awaiting_since + self.pong_timeout_s, 1, Event.PONG_OVERDUE))
        at, _, event = min(due)
        return at, event

    def sent(self, now: float, keepalive_interval_s: float) -> ConnectionClock:
        """A keepalive went out at ``now``; the next one is due an interval later (the
        interval follows the cluster's report interval, which can change)."""
        awaiting = self.awaiting_since if self.awaiting_since is not None else now
        return replace(
            self,
            last_sent_at=now,
            keepalive_interval_s=keepalive_interval_s,
            awaiting_since=awaiting,
        )

    def answered(self) -> ConnectionClock:
        """A pong arrived: nothing is awaited any more."""
        return replace(self, awaiting_since=None)

    def report_soon(self, now: float, min_spacing_s: float) -> ConnectionClock:
        """Bring the next keepalive forward to ``now`` (the policy just caught up: its
        digest can be verified at once instead of an interval later), but never closer
        than ``min_spacing_s`` after the last one, nor while a pong is awaited."""
        if self.awaiting_since is not None:
            return self
        due = max(now, self.last_sent_at + min_spacing_s)
        if due >= self.last_sent_at + self.keepalive_interval_s:
            return self
        return replace(self, last_sent_at=due - self.keepalive_interval_s)


# --- classifying connect failures ---------------------------------------------------------


def classify_connect_status(status: int | None, *, marked: bool = False) -> Event:
    """The event for a refused WebSocket handshake (``status`` None: no HTTP answer at
    all, e.g. connection refused or timeout; ``marked``: the answer carried the control
    plane's credential-rejected header), after ``core.backoff.classify``: 401/403 with
    the mark are fatal, without it they are confirmed over HTTP first; 404 can be a
    deployment in progress, 429 and 5xx are throttling and outages."""
    retry = classify(status, marked=marked, confirmable=True)
    if retry is Retry.STOP:
        return Event.CONNECT_REJECTED
    if retry is Retry.CONFIRM:
        return Event.CONNECT_REFUSED_UNMARKED
    return Event.CONNECT_FAILED
