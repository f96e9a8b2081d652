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


def test_first_connect_fetches_a_delta_and_arms_the_timers() -> None:
    life, cmds = run([E.START, E.CONNECTED])
    assert cmds == [(C.CONNECT,), (C.RESET_BACKOFF, C.ARM_TIMERS, C.FETCH_DELTA)]
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
    ("status", "event"),
    [
        (401, E.CONNECT_REJECTED),
        (403, E.CONNECT_REJECTED),
        (404, E.CONNECT_FAILED),
        (429, E.CONNECT_FAILED),
        (500, E.CONNECT_FAILED),
        (503, E.CONNECT_FAILED),
        (None, E.CONNECT_FAILED),
    ],
)
def test_only_401_and_403_are_fatal(status: int | None, event: Event) -> None:
    assert classify_connect_status(status) is event


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
