"""The control-plane WebSocket connection as a table-driven state machine (no I/O).

Theory of operation
-------------------
The link owns one WebSocket to the control plane. Everything that can happen to it is an
``Event``; ``Lifecycle.handle(event)`` looks the pair (state, event) up in ``TRANSITIONS``
and returns the ``Command``s the asyncio loop (``agent/link.py``) must execute, in order.
The loop never decides anything itself: it turns socket outcomes and timers into events
and executes commands, so every decision here is unit-tested without a network.

    IDLE --START--> CONNECTING --CONNECTED--> CONNECTED --LOST-----> BACKING_OFF
                        |  ^                     |  |                   |
                        |  +----RECONNECT_DUE----+  +--REVOKED_PUSH--+  |
                        |  +-------------BACKOFF_ELAPSED-------------|--+
                        +--CONNECT_FAILED--> BACKING_OFF              |
                        +--CONNECT_REJECTED (401/403)--> REJECTED    v
                                                                   REVOKED
    any state --STOP--> STOPPED

- After every successful (re)connect the node fetches a delta since its applied version
  (pushes sent while it was away are lost otherwise) and resets the backoff.
- A keepalive still unanswered (no pong, no message) when the next one is due counts as
  LOST: the loop reports it so, and the connection is replaced after a backoff.
- A planned reconnect (API Gateway closes every connection after 2 hours) closes and
  connects again at once, without backoff; the delta fetch after it closes any gap.
- A push that reveals a gap, a ``resync`` push, or a ``pong`` whose version is ahead of
  the applied one all lead to a delta fetch; in any other state they are ignored (a
  message can still be in flight while the connection closes).
- ``revoked`` (a push) and a 401/403 on connect are fatal: the credential is no longer
  good, reconnecting would only hammer the control plane. The node keeps enforcing its
  last policy and reports itself not ready.
- REJECTED, REVOKED and STOPPED are terminal: only STOP is accepted there (a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from onprem_gateway.core.backoff import Retry, classify


class State(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    REJECTED = "rejected"  # 401/403 on connect: the credential is not accepted
    REVOKED = "revoked"  # the control plane said so over the connection
    STOPPED = "stopped"


class Event(StrEnum):
    START = "start"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"  # network error, timeout, 5xx, 429: retryable
    CONNECT_REJECTED = "connect_rejected"  # 401/403: fatal
    LOST = "lost"  # the open connection closed or failed
    KEEPALIVE_DUE = "keepalive_due"
    RECONNECT_DUE = "reconnect_due"  # planned, before API Gateway's 2-hour limit
    BACKOFF_ELAPSED = "backoff_elapsed"
    PUSH_GAP = "push_gap"  # a push's version skipped ahead of the applied version
    RESYNC = "resync"  # the control plane asked for a delta fetch
    PONG_AHEAD = "pong_ahead"  # a pong names a version above the applied one
    REVOKED_PUSH = "revoked_push"
    STOP = "stop"


class Command(StrEnum):
    CONNECT = "connect"
    CLOSE = "close"
    SEND_KEEPALIVE = "send_keepalive"
    FETCH_DELTA = "fetch_delta"
    RESET_BACKOFF = "reset_backoff"
    SLEEP_BACKOFF = "sleep_backoff"  # wait the next backoff delay, then BACKOFF_ELAPSED
    ARM_TIMERS = "arm_timers"  # start the keepalive and planned-reconnect clocks
    REPORT_FATAL = "report_fatal"  # mark the node not ready (credential refused)


S, E, C = State, Event, Command
_ACTIVE = (S.IDLE, S.CONNECTING, S.CONNECTED, S.BACKING_OFF)

TRANSITIONS: dict[tuple[State, Event], tuple[State, tuple[Command, ...]]] = {
    (S.IDLE, E.START): (S.CONNECTING, (C.CONNECT,)),
    (S.CONNECTING, E.CONNECTED): (
        S.CONNECTED,
        (C.RESET_BACKOFF, C.ARM_TIMERS, C.FETCH_DELTA),
    ),
    (S.CONNECTING, E.CONNECT_FAILED): (S.BACKING_OFF, (C.SLEEP_BACKOFF,)),
    (S.CONNECTING, E.CONNECT_REJECTED): (S.REJECTED, (C.REPORT_FATAL,)),
    (S.CONNECTED, E.KEEPALIVE_DUE): (S.CONNECTED, (C.SEND_KEEPALIVE,)),
    (S.CONNECTED, E.RECONNECT_DUE): (S.CONNECTING, (C.CLOSE, C.CONNECT)),
    (S.CONNECTED, E.LOST): (S.BACKING_OFF, (C.CLOSE, C.SLEEP_BACKOFF)),
    (S.CONNECTED, E.PUSH_GAP): (S.CONNECTED, (C.FETCH_DELTA,)),
    (S.CONNECTED, E.RESYNC): (S.CONNECTED, (C.FETCH_DELTA,)),
    (S.CONNECTED, E.PONG_AHEAD): (S.CONNECTED, (C.FETCH_DELTA,)),
    (S.CONNECTED, E.REVOKED_PUSH): (S.REVOKED, (C.CLOSE, C.REPORT_FATAL)),
    (S.BACKING_OFF, E.BACKOFF_ELAPSED): (S.CONNECTING, (C.CONNECT,)),
}
# Stopping is allowed from everywhere; from a terminal state it does nothing more.
for _state in _ACTIVE:
    TRANSITIONS[(_state, E.STOP)] = (S.STOPPED, (C.CLOSE,))
for _state in (S.REJECTED, S.REVOKED, S.STOPPED):
    TRANSITIONS[(_state, E.STOP)] = (S.STOPPED, ())
# Messages and timers that race with a closing connection are harmless: ignored.
_LATE = (E.KEEPALIVE_DUE, E.RECONNECT_DUE, E.PUSH_GAP, E.RESYNC, E.PONG_AHEAD, E.LOST)
for _state in (S.CONNECTING, S.BACKING_OFF, S.REJECTED, S.REVOKED, S.STOPPED):
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


# --- the two clocks of an open connection ---------------------------------------------


@dataclass(frozen=True)
class ConnectionClock:
    """When the next timer event of an open connection is due (all times monotonic).

    ``connected_at`` is when the connection opened, ``last_sent_at`` when the node last
    sent a keepalive (or connected). The planned reconnect wins when both are due.
    """

    connected_at: float
    last_sent_at: float
    keepalive_interval_s: float
    reconnect_after_s: float

    def next_due(self) -> tuple[float, Event]:
        keepalive_at = self.last_sent_at + self.keepalive_interval_s
        reconnect_at = self.connected_at + self.reconnect_after_s
        if reconnect_at <= keepalive_at:
            return reconnect_at, Event.RECONNECT_DUE
        return keepalive_at, Event.KEEPALIVE_DUE


# --- classifying connect failures ---------------------------------------------------------


def classify_connect_status(status: int | None) -> Event:
    """The event for a refused WebSocket handshake (``status`` None: no HTTP answer at
    all, e.g. connection refused or timeout), after ``core.backoff.classify`` (only
    401/403 are fatal: 404 can be a deployment in progress, 429 and 5xx are throttling
    and outages)."""
    if classify(status) is Retry.STOP:
        return Event.CONNECT_REJECTED
    return Event.CONNECT_FAILED
