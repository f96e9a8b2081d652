"""The WebSocket lifecycle table: every path the link takes, asserted as commands."""

from __future__ import annotations

import pytest

from onprem_gateway.agent.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    Command,
    ConnectionClock,
    Event,
    Lifecycle,
    LifecycleError,
    State,
    classify_connect_status,
)

C, E, S = Command, Event, State


def run(events: list[Event]) -> tuple[Lifecycle, list[tuple[Command, ...]]]:
    life = Lifecycle()
    return life, [life.handle(e) for e in events]


def test_first_connect_fetches_a_delta_arms_the_timers_and_reports_at_once() -> None:
    life, cmds = run([E.START, E.CONNECTED])
    # The keepalive at once (new with the pong deadline): only a pong proves the control
    # plane answers, and it verifies the digest without waiting a report interval.
    assert cmds == [
        (C.CONNECT,),
        (C.RESET_BACKOFF, C.ARM_TIMERS, C.FETCH_DELTA, C.SEND_KEEPALIVE),
    ]
    assert life.state is S.CONNECTED


def test_failed_connect_backs_off_then_retries() -> None:
    life, cmds = run([E.START, E.CONNECT_FAILED, E.BACKOFF_ELAPSED])
    assert cmds[1:] == [(C.SLEEP_BACKOFF,), (C.CONNECT,)]
    assert life.state is S.CONNECTING


def test_lost_connection_closes_backs_off_and_refetches_delta_after_reconnect() -> None:
    life, cmds = run([E.START, E.CONNECTED, E.LOST, E.BACKOFF_ELAPSED, E.CONNECTED])
    assert cmds[2] == (C.CLOSE, C.SLEEP_BACKOFF)
    assert C.FETCH_DELTA in cmds[4]
    assert life.state is S.CONNECTED


def test_planned_reconnect_has_no_backoff() -> None:
    life, cmds = run([E.START, E.CONNECTED, E.RECONNECT_DUE])
    assert cmds[2] == (C.CLOSE, C.CONNECT)
    assert life.state is S.CONNECTING


@pytest.mark.parametrize("event", [E.PUSH_GAP, E.RESYNC, E.PONG_AHEAD])
def test_gap_resync_and_pong_ahead_fetch_a_delta(event: Event) -> None:
    life, cmds = run([E.START, E.CONNECTED, event])
    assert cmds[2] == (C.FETCH_DELTA,)
    assert life.state is S.CONNECTED


def test_keepalive_due_sends_one() -> None:
    _, cmds = run([E.START, E.CONNECTED, E.KEEPALIVE_DUE])
    assert cmds[2] == (C.SEND_KEEPALIVE,)


def test_revoked_push_is_terminal_and_reported() -> None:
    life, cmds = run([E.START, E.CONNECTED, E.REVOKED_PUSH])
    assert cmds[2] == (C.CLOSE, C.REPORT_FATAL)
    assert life.state is S.REVOKED and life.terminal
    assert life.handle(E.LOST) == ()  # the close that follows changes nothing
    assert life.handle(E.STOP) == ()
    assert life.state is S.STOPPED


def test_rejected_handshake_is_terminal() -> None:
    life, cmds = run([E.START, E.CONNECT_REJECTED])
    assert cmds[1] == (C.REPORT_FATAL,)
    assert life.state is S.REJECTED
    with pytest.raises(LifecycleError):
        life.handle(E.BACKOFF_ELAPSED)


def test_stop_closes_from_every_active_state() -> None:
    for prefix in ([], [E.START], [E.START, E.CONNECTED], [E.START, E.CONNECT_FAILED]):
        life, _ = run(prefix)
        assert life.handle(E.STOP) == (C.CLOSE,)
        assert life.state is S.STOPPED


def test_late_messages_while_backing_off_are_ignored() -> None:
    life, _ = run([E.START, E.CONNECT_FAILED])
    for event in (E.PUSH_GAP, E.RESYNC, E.PONG_AHEAD, E.KEEPALIVE_DUE, E.LOST):
        assert life.handle(event) == ()
    assert life.state is S.BACKING_OFF


def test_impossible_event_is_a_typed_error() -> None:
    life = Lifecycle()
    with pytest.raises(LifecycleError, match="not valid in state idle"):
        life.handle(E.CONNECTED)


def test_terminal_states_accept_nothing_that_reconnects() -> None:
    for (state, _event), (new_state, commands) in TRANSITIONS.items():
        if state in TERMINAL:
            assert C.CONNECT not in commands
            assert new_state in TERMINAL


def test_history_is_bounded() -> None:
    life, _ = run([E.START, E.CONNECTED])
    for _ in range(200):
        life.handle(E.KEEPALIVE_DUE)
    assert len(life.history) == 50


@pytest.mark.parametrize(
    ("status", "marked", "event"),
    [
        # The control plane's own refusal (X-SEG-Credential: rejected) is fatal at once.
        (401, True, E.CONNECT_REJECTED),
        (403, True, E.CONNECT_REJECTED),
        # Without the mark it may be a proxy or WAF, or API Gateway dropping the header:
        # confirmed over HTTP first.
        (401, False, E.CONNECT_REFUSED_UNMARKED),
        (403, False, E.CONNECT_REFUSED_UNMARKED),
        (404, False, E.CONNECT_FAILED),
        (429, False, E.CONNECT_FAILED),
        (500, True, E.CONNECT_FAILED),
        (503, False, E.CONNECT_FAILED),
        (None, False, E.CONNECT_FAILED),
    ],
)
def test_only_a_marked_401_or_403_is_fatal(status: int | None, marked: bool, event: Event) -> None:
    assert classify_connect_status(status, marked=marked) is event


def test_clock_keepalive_comes_first_and_reconnect_before_two_hours() -> None:
    clock = ConnectionClock(
        connected_at=0.0, last_sent_at=0.0, keepalive_interval_s=240, reconnect_after_s=6600
    )
    assert clock.next_due() == (240.0, E.KEEPALIVE_DUE)
    # Walk the whole connection: 27 keepalives, then the planned reconnect at 110 min.
    sent, events = 0.0, []
    while True:
        at, event = ConnectionClock(0.0, sent, 240, 6600).next_due()
        events.append(event)
        if event is E.RECONNECT_DUE:
            assert at == 6600.0
            break
        sent = at
    assert events.count(E.KEEPALIVE_DUE) == 27


def test_clock_reconnect_wins_a_tie() -> None:
    assert ConnectionClock(0.0, 100.0, 100, 200).next_due() == (200.0, E.RECONNECT_DUE)


# --- liveness, anti-entropy and unmarked refusals ------------------------------------------


def test_an_overdue_pong_reports_the_control_plane_unresponsive_and_reconnects() -> None:
    life, cmds = run([E.START, E.CONNECTED, E.KEEPALIVE_DUE, E.PONG_OVERDUE])
    assert cmds[3] == (C.REPORT_UNRESPONSIVE, C.CLOSE, C.SLEEP_BACKOFF)
    assert life.state is S.BACKING_OFF
    assert life.handle(E.BACKOFF_ELAPSED) == (C.CONNECT,)


@pytest.mark.parametrize("event", [E.DIVERGED, E.RESYNC_FULL])
def test_divergence_and_a_full_resync_replace_the_policy(event: Event) -> None:
    life, cmds = run([E.START, E.CONNECTED, event])
    assert cmds[2] == (C.FETCH_REPLACEMENT,)
    assert life.state is S.CONNECTED


def test_an_unmarked_refusal_is_confirmed_then_retried() -> None:
    life, cmds = run(
        [E.START, E.CONNECT_REFUSED_UNMARKED, E.CREDENTIAL_NOT_REJECTED, E.BACKOFF_ELAPSED]
    )
    assert cmds[1:] == [(C.CONFIRM_CREDENTIAL,), (C.SLEEP_BACKOFF,), (C.CONNECT,)]
    assert life.state is S.CONNECTING and not life.terminal


def test_an_unmarked_refusal_the_policy_route_confirms_is_fatal() -> None:
    life, cmds = run([E.START, E.CONNECT_REFUSED_UNMARKED, E.CREDENTIAL_REJECTED])
    assert cmds[2] == (C.REPORT_FATAL,)
    assert life.state is S.REJECTED and life.terminal


@pytest.mark.parametrize(
    "prefix",
    [
        [E.START],
        [E.START, E.CONNECT_REFUSED_UNMARKED],
        [E.START, E.CONNECT_FAILED],
        [E.START, E.CONNECT_REJECTED],
        [E.START, E.CONNECTED, E.REVOKED_PUSH],
    ],
)
def test_late_liveness_and_divergence_events_are_ignored_when_not_connected(
    prefix: list[Event],
) -> None:
    life, _ = run(prefix)
    state = life.state
    for event in (E.PONG_OVERDUE, E.DIVERGED, E.RESYNC_FULL, E.KEEPALIVE_DUE):
        assert life.handle(event) == ()
    assert life.state is state


def test_every_state_can_stop() -> None:
    for state in S:
        assert (state, E.STOP) in TRANSITIONS


def test_clock_awaits_a_pong_after_each_keepalive_and_forgets_it_when_answered() -> None:
    clock = ConnectionClock(0.0, 0.0, 30, 6600, pong_timeout_s=10)
    assert clock.next_due() == (30.0, E.KEEPALIVE_DUE)
    sent = clock.sent(30.0, 30)
    assert sent.next_due() == (40.0, E.PONG_OVERDUE)
    answered = sent.answered()
    assert answered.next_due() == (60.0, E.KEEPALIVE_DUE)


def test_clock_the_deadline_runs_from_the_oldest_unanswered_keepalive() -> None:
    # A deadline longer than the interval: further keepalives go out, but the deadline
    # still counts from the first one nobody answered.
    clock = ConnectionClock(0.0, 0.0, 2, 6600, pong_timeout_s=5).sent(2.0, 2)
    assert clock.next_due() == (4.0, E.KEEPALIVE_DUE)
    clock = clock.sent(4.0, 2).sent(6.0, 2)
    assert clock.next_due() == (7.0, E.PONG_OVERDUE)


def test_clock_follows_a_changed_report_interval() -> None:
    clock = ConnectionClock(0.0, 0.0, 30, 6600).sent(30.0, 10).answered()
    assert clock.next_due() == (40.0, E.KEEPALIVE_DUE)


def test_clock_ties_prefer_reconnect_then_pong_then_keepalive() -> None:
    clock = ConnectionClock(0.0, 90.0, 10, 100, pong_timeout_s=10, awaiting_since=90.0)
    assert clock.next_due() == (100.0, E.RECONNECT_DUE)
    clock = ConnectionClock(0.0, 90.0, 10, 200, pong_timeout_s=10, awaiting_since=90.0)
    assert clock.next_due() == (100.0, E.PONG_OVERDUE)


@pytest.mark.parametrize(
    ("last_sent", "awaiting", "now", "due"),
    [
        (0.0, None, 5.0, 5.0),  # caught up 5 s after a report: report now
        (0.0, None, 1.0, 2.0),  # but never closer than 2 s after the last one
        (0.0, 3.0, 5.0, 30.0),  # a pong is awaited: keep the schedule
        (0.0, None, 29.0, 29.0),  # almost due anyway
        (0.0, None, 31.0, 30.0),  # already due: unchanged
    ],
)
def test_clock_report_soon_brings_the_next_keepalive_forward(
    last_sent: float, awaiting: float | None, now: float, due: float
) -> None:
    clock = ConnectionClock(0.0, last_sent, 30, 6600, awaiting_since=awaiting)
    moved = clock.report_soon(now, 2.0)
    if awaiting is not None:
        assert moved == clock
    assert moved.last_sent_at + moved.keepalive_interval_s == due
