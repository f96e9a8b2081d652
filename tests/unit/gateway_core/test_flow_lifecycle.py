"""The request flow's lifecycle (``core.flow_lifecycle``), by feeding events: no sockets.

Every row of the table, every pair the table leaves out, ``DONE`` absorbing, then
properties over random event sequences played the way ``proxy/flow.py`` plays them
(our own answers feed ``ANSWERED*`` from the phase that wrote them, a cut connection
is eventually lost)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core.flow_lifecycle import (
    ANSWER_STARTED,
    DROPS_BODY,
    TABLE,
    Command,
    Event,
    Phase,
    UnexpectedEvent,
    accepts,
    answer_event,
    head_event,
    step,
    upstream_done_event,
)

P, E, C = Phase, Event, Command

# Our own answers: each one is written at once and ends with ANSWERED or ANSWERED_EARLY.
ANSWERS = frozenset(
    {
        C.ANSWER_UNAVAILABLE,
        C.ANSWER_BAD_GATEWAY,
        C.ANSWER_NOT_RELAYED,
        C.ANSWER_TIMEOUT,
        C.ANSWER_REVOKED,
    }
)
# The answers the flow writes with ``close=True``: the connection's framing is unsure.
CLOSING_ANSWERS = frozenset({C.ANSWER_BAD_GATEWAY, C.ANSWER_NOT_RELAYED, C.ANSWER_TIMEOUT})
CUTS = frozenset({C.CUT, C.CUT_REVOKED})
# While an upstream connection may be attached.
WITH_UPSTREAM = frozenset({P.FORWARDING, P.RESPONDING})
ROWS = sorted(TABLE.items())


# --- the table, row by row ---------------------------------------------------------------


@pytest.mark.parametrize(("at", "move"), ROWS, ids=[f"{p.name}-{e.name}" for (p, e), _ in ROWS])
def test_every_row(at: tuple[Phase, Event], move: tuple[Phase, tuple[Command, ...]]) -> None:
    phase, event = at
    after, commands = step(phase, event)
    assert (after, commands) == move and accepts(phase, event)
    assert isinstance(commands, tuple) and len(set(commands)) == len(commands)
    # Released exactly when it ends, unless it never started.
    assert (C.FINISH in commands) == (after is P.DONE and phase not in (P.DONE, P.QUEUED))
    if C.FINISH in commands:
        assert commands[-1] is C.FINISH  # the next request may start inside it
    # Our own answer only while nothing was written; a cut only once something was.
    if ANSWERS & set(commands):
        assert phase not in ANSWER_STARTED and after is phase
        assert len(ANSWERS & set(commands)) == 1
    if CUTS & set(commands):
        assert phase in ANSWER_STARTED and after is P.CUTTING
    if C.DROP_UPSTREAM in commands:
        assert phase in WITH_UPSTREAM and commands[0] is C.DROP_UPSTREAM
    if C.RELAY_HEAD in commands:
        assert (phase, event, after) == (P.FORWARDING, E.UPSTREAM_HEAD, P.RESPONDING)
    if event is E.CLIENT_LOST:
        assert after is P.DONE
    if event is E.REVOKED and phase is not P.DONE:
        revoked = C.CUT_REVOKED if phase in ANSWER_STARTED else C.ANSWER_REVOKED
        assert revoked in commands
    if phase is P.DONE:
        assert move == (P.DONE, ())


def test_the_main_paths_read_as_the_issue_says() -> None:
    def play(*events: Event, at: Phase = P.QUEUED) -> tuple[Phase, list[Command]]:
        done: list[Command] = []
        for event in events:
            at, commands = step(at, event)
            done += commands
        return at, done

    # Proxied: admitted, password checked, attached, answered, body complete.
    proxied = (E.START, E.VERIFY, E.FORWARD, E.UPSTREAM_ATTACHED, E.UPSTREAM_HEAD)
    assert play(*proxied, E.UPSTREAM_DONE) == (
        P.DONE,
        [C.RELAY_HEAD, C.END_RESPONSE, C.RELEASE_UPSTREAM, C.FINISH],
    )
    # Answered before the body ended: the rest is drained, then it ends.
    assert play(*proxied, E.UPSTREAM_DONE_EARLY)[0] is P.DRAINING
    assert play(*proxied, E.UPSTREAM_DONE_EARLY, E.CLIENT_BODY_END)[0] is P.DONE
    # Blocked at admission: answered, done.
    assert play(E.START, E.ANSWERED) == (P.DONE, [C.FINISH])
    # A pooled connection the upstream had closed: sent again on a new one.
    assert play(E.START, E.FORWARD, E.UPSTREAM_ATTACHED, E.UPSTREAM_RETRY) == (
        P.CONNECTING,
        [C.RETRY],
    )
    # Lost while queued: nothing to release.
    assert play(E.CLIENT_BODY_END, E.CLIENT_LOST) == (P.DONE, [])


def test_every_pair_not_in_the_table_is_refused() -> None:
    refused = 0
    for phase, event in itertools.product(Phase, Event):
        if (phase, event) in TABLE:
            continue
        refused += 1
        assert not accepts(phase, event)
        with pytest.raises(UnexpectedEvent) as caught:
            step(phase, event)
        assert (caught.value.phase, caught.value.event) == (phase, event)
        assert phase.name in str(caught.value) and event.name in str(caught.value)
    assert refused > 0


def test_done_is_absorbing() -> None:
    for event in Event:
        assert step(P.DONE, event) == (P.DONE, ())
    assert not any(after is not P.DONE for (at, _), (after, _) in TABLE.items() if at is P.DONE)


def test_every_phase_can_end_and_every_event_means_something() -> None:
    # ADMITTING lasts one synchronous call (``RequestFlow.start``): nothing from outside
    # can reach it, and it leaves by its outcome.
    for phase in Phase:
        assert accepts(phase, E.CLIENT_LOST) == (phase is not P.ADMITTING)
    assert {e for (p, e) in TABLE if p is P.ADMITTING} == {
        E.VERIFY,
        E.FORWARD,
        E.ANSWERED,
        E.ANSWERED_EARLY,
    }
    for event in Event:
        assert any(e is event for (p, e) in TABLE if p is not P.DONE), event


def test_the_facts_pick_the_event() -> None:
    assert answer_event(True, False) is E.ANSWERED
    assert answer_event(False, True) is E.ANSWERED
    assert answer_event(False, False) is E.ANSWERED_EARLY
    assert upstream_done_event(True, False) is E.UPSTREAM_DONE
    assert upstream_done_event(False, True) is E.UPSTREAM_DONE
    assert upstream_done_event(False, False) is E.UPSTREAM_DONE_EARLY
    assert head_event(200, head_only=False) is E.UPSTREAM_HEAD
    assert head_event(401, head_only=True) is E.UPSTREAM_HEAD
    for status in (200, 302, 403, 451, 500):
        assert head_event(status, head_only=True) is E.UPSTREAM_HEAD_UNAUTHENTICATED


def test_the_body_is_dropped_only_once_the_answer_is_complete_or_cut() -> None:
    assert DROPS_BODY <= ANSWER_STARTED
    assert P.RESPONDING not in DROPS_BODY  # the upload may still be streaming upstream


# --- random event sequences ----------------------------------------------------------------

# What may happen to a flow from outside (the answers' ANSWERED* are fed by the player;
# CLIENT_LOST ends every sequence, wherever it got to).
OUTSIDE = (
    E.START,
    E.VERIFY,
    E.FORWARD,
    E.UPSTREAM_ATTACHED,
    E.UPSTREAM_UNREACHABLE,
    E.UPSTREAM_DONE,
    E.UPSTREAM_FAILED,
    E.UPSTREAM_RETRY,
    E.CLIENT_BODY_END,
    E.REVOKED,
    E.TIMED_OUT,
    E.ANSWERED,  # admission or the password check answered it
)


PROGRESS = frozenset(
    {E.START, E.VERIFY, E.FORWARD, E.UPSTREAM_ATTACHED, E.UPSTREAM_HEAD, E.CLIENT_BODY_END}
)


@dataclass
class Played:
    """A flow as ``proxy/flow.py`` drives it, with what it did."""

    head_only: bool
    body_complete: bool
    phase: Phase = P.QUEUED
    closing: bool = False
    started: bool = False
    finished: int = 0
    relayed: list[int] = field(default_factory=list)  # the statuses relayed
    log: list[tuple[Phase, Event, tuple[Command, ...]]] = field(default_factory=list)

    def feed(self, event: Event, status: int = 200) -> None:
        if event is E.CLIENT_BODY_END:
            self.body_complete = True
        if event is E.START:
            self.started = True
        at = self.phase
        self.phase, commands = step(at, event)
        self.log.append((at, event, commands))
        for command in commands:
            if command is C.FINISH:
                self.finished += 1
            elif command is C.RELAY_HEAD:
                self.relayed.append(status)
            elif command in ANSWERS:
                self.closing = self.closing or command in CLOSING_ANSWERS
                self.feed(answer_event(self.body_complete, self.closing))

    def happen(self, event: Event, status: int) -> None:
        """``event`` as the flow would feed it, given the facts."""
        if event is E.UPSTREAM_DONE:
            event = upstream_done_event(self.body_complete, self.closing)
        elif event is E.ANSWERED:
            event = answer_event(self.body_complete, self.closing)
        self.feed(event, status)

    def candidates(self) -> list[tuple[Event, int]]:
        """What may happen next, with the status an upstream head would carry."""
        out = [(e, 0) for e in OUTSIDE if accepts(self.phase, self._as_fed(e))]
        if self.phase is P.ADMITTING:  # synchronous: only its outcome happens
            out = [(e, 0) for e in (E.VERIFY, E.FORWARD, E.ANSWERED)]
        if self.phase is P.FORWARDING:
            for status in (200, 401, 403, 500):
                out.append((head_event(status, head_only=self.head_only), status))
        # Progress three times as likely as an ending, so deep phases are reached too.
        return out + [(e, s) for e, s in out if e in PROGRESS] * 2

    def _as_fed(self, event: Event) -> Event:
        if event is E.UPSTREAM_DONE:
            return upstream_done_event(self.body_complete, self.closing)
        if event is E.ANSWERED:
            return answer_event(self.body_complete, self.closing)
        return event


@st.composite
def played(draw: st.DrawFn) -> Played:
    flow = Played(head_only=draw(st.booleans()), body_complete=draw(st.booleans()))
    flow.closing = draw(st.booleans())
    for _ in range(draw(st.integers(0, 16))):
        choices = flow.candidates()
        if not choices or flow.phase is P.DONE:
            break
        event, status = draw(st.sampled_from(choices))
        flow.happen(event, status)
    if flow.phase is P.ADMITTING:  # it leaves by its outcome before anything else
        flow.happen(E.ANSWERED, 0)
    # However it went, the device's connection goes away in the end.
    flow.feed(E.CLIENT_LOST)
    return flow


@settings(max_examples=400, deadline=None)
@given(played())
def test_revocation_answers_before_a_response_started_and_cuts_after(flow: Played) -> None:
    for at, event, commands in flow.log:
        if event is not E.REVOKED or at is P.DONE:
            continue
        if at in ANSWER_STARTED:
            assert C.CUT_REVOKED in commands and not ANSWERS & set(commands)
        else:
            assert C.ANSWER_REVOKED in commands and not CUTS & set(commands)


@settings(max_examples=400, deadline=None)
@given(played())
def test_a_started_flow_finishes_exactly_once(flow: Played) -> None:
    assert flow.phase is P.DONE
    assert flow.finished == (1 if flow.started else 0)
    # Nothing happens after the end.
    ended = [i for i, (_, _, commands) in enumerate(flow.log) if C.FINISH in commands]
    if ended:
        assert all(not commands for _, _, commands in flow.log[ended[0] + 1 :])


@settings(max_examples=400, deadline=None)
@given(played())
def test_a_negotiate_leg_never_relays_anything_but_a_401(flow: Played) -> None:
    if flow.head_only:
        assert all(status == 401 for status in flow.relayed)
    assert len(flow.relayed) <= 1


@settings(max_examples=400, deadline=None)
@given(played())
def test_at_most_one_answer_reaches_the_device(flow: Played) -> None:
    answers = [
        c for _, _, commands in flow.log for c in commands if c in ANSWERS or c is C.RELAY_HEAD
    ]
    assert len(answers) <= 1
