"""The lifecycle of one proxied request, as one transition table. Pure.

A request flow (``proxy/flow.py``) is in one ``Phase``; what happens to it (its
admission's outcome, the upstream connection's progress, the device's body ending, a
revocation, the idle timeout, the device going away) is an ``Event``; ``TABLE`` says,
for each phase, which events it accepts, the phase it moves to and the ``Command``s the
flow carries out, in order. ``step`` looks a transition up and refuses any other event
with ``UnexpectedEvent``: an event a phase does not expect is a bug, not a case to
guess at. ``DONE`` is absorbing: whatever arrives after the end changes nothing.

Facts that are not phases stay with the flow as plain fields and pick which event is
fed where the table would otherwise need them as inputs:

- whether the request body is complete, and whether the connection closes after this
  answer: a finished answer is ``ANSWERED`` / ``UPSTREAM_DONE`` when either holds, else
  the ``*_EARLY`` event, after which the rest of the body is read and dropped
  (``DRAINING``) so the connection stays usable (RFC 9112 9.3: the next request starts
  where this one's body ends) (``answer_event``, ``upstream_done_event``);
- whether the request is an NTLM NEGOTIATE leg, forwarded without its body: only the
  server's 401 CHALLENGE may be relayed from it, any other status is
  ``UPSTREAM_HEAD_UNAUTHENTICATED`` (``head_event``);
- whether an upstream failure may be retried (a reused pooled connection the upstream
  had closed, nothing answered, the whole request in hand): ``UPSTREAM_RETRY``.

The commands are module constants (tuples of enum members) so a step allocates
nothing; enums compare by identity.
"""

from __future__ import annotations

from enum import IntEnum


class Phase(IntEnum):
    QUEUED = 0  # a pipelined request waiting its turn (its body buffered)
    ADMITTING = 1  # routed and decided (synchronous: core.request_admission)
    VERIFYING = 2  # its device password is being verified (scrypt, in a thread)
    CONNECTING = 3  # to be forwarded: waiting for an upstream connection
    FORWARDING = 4  # the request went upstream; no answer yet
    RESPONDING = 5  # the upstream's answer is being relayed
    DRAINING = 6  # answered in full; the rest of the request body is dropped
    CUTTING = 7  # the device's connection is being aborted (its answer cannot end well)
    DONE = 8


class Event(IntEnum):
    START = 0  # the flow became its connection's current request
    VERIFY = 1  # admitted: its device password is checked asynchronously
    FORWARD = 2  # admitted (password checked) or an NTLM NEGOTIATE leg: send it upstream
    ANSWERED = 3  # our own answer is written; the request ended or the connection closes
    ANSWERED_EARLY = 4  # our own answer is written; request body still arriving
    UPSTREAM_ATTACHED = 5  # an upstream connection took the request head
    UPSTREAM_UNREACHABLE = 6  # no upstream connection could be opened
    UPSTREAM_HEAD = 7  # the upstream's response head arrived
    UPSTREAM_HEAD_UNAUTHENTICATED = 8  # a non-401 answer to an NTLM NEGOTIATE leg
    UPSTREAM_DONE = 9  # the upstream's answer ended; so did the request (or we close)
    UPSTREAM_DONE_EARLY = 10  # the upstream's answer ended; request body still arriving
    UPSTREAM_FAILED = 11  # the upstream connection failed (reset, protocol error)
    UPSTREAM_RETRY = 12  # it failed in a way that allows sending the request again
    CLIENT_BODY_END = 13  # the device's request body is complete
    REVOKED = 14  # a policy change no longer admits the request
    TIMED_OUT = 15  # the connection's idle timeout fired
    CLIENT_LOST = 16  # the device's connection closed


class Command(IntEnum):
    FINISH = 0  # release the request: counters, in-flight index, the next request
    DROP_UPSTREAM = 1  # detach and abort the upstream connection (its request is cut)
    RELEASE_UPSTREAM = 2  # the upstream exchange ended: pool it, keep it private or close
    RELAY_HEAD = 3  # write the upstream's response head to the device
    END_RESPONSE = 4  # end a chunked answer to the device (its last chunk)
    END_UPSTREAM_BODY = 5  # send the end of a chunked request body upstream
    RETRY = 6  # send the request again on a new upstream connection
    ANSWER_UNAVAILABLE = 7  # 503: the mail server is unreachable
    ANSWER_BAD_GATEWAY = 8  # 502: the mail server closed the connection
    ANSWER_NOT_RELAYED = 9  # 502: the server answered an unauthenticated request
    ANSWER_TIMEOUT = 10  # 504: the mail server did not answer in time
    ANSWER_REVOKED = 11  # the blocked answer (or 401, a withdrawn device password)
    CUT_REVOKED = 12  # record the revocation, then cut the device's connection
    CUT = 13  # abort the device's connection: it sees a truncated answer, not a wrong one


class UnexpectedEvent(Exception):
    """An event the flow's phase does not accept (a bug in the caller)."""

    def __init__(self, phase: Phase, event: Event) -> None:
        super().__init__(f"{event.name} in phase {phase.name}")
        self.phase = phase
        self.event = event


P, E, C = Phase, Event, Command
Commands = tuple[Command, ...]
Transition = tuple[Phase, Commands]

_NONE: Commands = ()
_FINISH: Commands = (C.FINISH,)
_RELEASE: Commands = (C.DROP_UPSTREAM, C.FINISH)

_DONE_UPSTREAM: Commands = (C.END_RESPONSE, C.RELEASE_UPSTREAM)

TABLE: dict[tuple[Phase, Event], Transition] = {
    # A pipelined request: its body may arrive in full before its turn comes.
    (P.QUEUED, E.START): (P.ADMITTING, _NONE),
    (P.QUEUED, E.CLIENT_BODY_END): (P.QUEUED, _NONE),
    (P.QUEUED, E.CLIENT_LOST): (P.DONE, _NONE),  # never started: nothing to release
    # Admission's outcome (core.request_admission), carried out at once.
    (P.ADMITTING, E.VERIFY): (P.VERIFYING, _NONE),
    (P.ADMITTING, E.FORWARD): (P.CONNECTING, _NONE),
    (P.ADMITTING, E.ANSWERED): (P.DONE, _FINISH),
    (P.ADMITTING, E.ANSWERED_EARLY): (P.DRAINING, _NONE),
    # The device password is being verified.
    (P.VERIFYING, E.FORWARD): (P.CONNECTING, _NONE),
    (P.VERIFYING, E.ANSWERED): (P.DONE, _FINISH),
    (P.VERIFYING, E.ANSWERED_EARLY): (P.DRAINING, _NONE),
    (P.VERIFYING, E.CLIENT_BODY_END): (P.VERIFYING, _NONE),
    (P.VERIFYING, E.REVOKED): (P.VERIFYING, (C.ANSWER_REVOKED,)),
    (P.VERIFYING, E.TIMED_OUT): (P.VERIFYING, (C.ANSWER_TIMEOUT,)),
    (P.VERIFYING, E.CLIENT_LOST): (P.DONE, _FINISH),
    # Waiting for an upstream connection (a pooled one is attached at once).
    (P.CONNECTING, E.UPSTREAM_ATTACHED): (P.FORWARDING, _NONE),
    (P.CONNECTING, E.UPSTREAM_UNREACHABLE): (P.CONNECTING, (C.ANSWER_UNAVAILABLE,)),
    (P.CONNECTING, E.ANSWERED): (P.DONE, _FINISH),
    (P.CONNECTING, E.ANSWERED_EARLY): (P.DRAINING, _NONE),
    (P.CONNECTING, E.CLIENT_BODY_END): (P.CONNECTING, _NONE),  # sent with the head
    (P.CONNECTING, E.REVOKED): (P.CONNECTING, (C.ANSWER_REVOKED,)),
    (P.CONNECTING, E.TIMED_OUT): (P.CONNECTING, (C.ANSWER_TIMEOUT,)),
    (P.CONNECTING, E.CLIENT_LOST): (P.DONE, _FINISH),
    # The request is upstream; nothing was answered yet, so it can still be.
    (P.FORWARDING, E.UPSTREAM_HEAD): (P.RESPONDING, (C.RELAY_HEAD,)),
    (P.FORWARDING, E.UPSTREAM_HEAD_UNAUTHENTICATED): (
        P.FORWARDING,
        (C.DROP_UPSTREAM, C.ANSWER_NOT_RELAYED),
    ),
    (P.FORWARDING, E.UPSTREAM_FAILED): (P.FORWARDING, (C.ANSWER_BAD_GATEWAY,)),
    (P.FORWARDING, E.UPSTREAM_RETRY): (P.CONNECTING, (C.RETRY,)),
    (P.FORWARDING, E.ANSWERED): (P.DONE, _FINISH),
    (P.FORWARDING, E.ANSWERED_EARLY): (P.DRAINING, _NONE),
    (P.FORWARDING, E.CLIENT_BODY_END): (P.FORWARDING, (C.END_UPSTREAM_BODY,)),
    (P.FORWARDING, E.REVOKED): (P.FORWARDING, (C.DROP_UPSTREAM, C.ANSWER_REVOKED)),
    (P.FORWARDING, E.TIMED_OUT): (P.FORWARDING, (C.DROP_UPSTREAM, C.ANSWER_TIMEOUT)),
    (P.FORWARDING, E.CLIENT_LOST): (P.DONE, _RELEASE),
    # The upstream's answer is being relayed: a half-sent answer cannot be replaced,
    # only cut short.
    (P.RESPONDING, E.UPSTREAM_DONE): (P.DONE, (*_DONE_UPSTREAM, C.FINISH)),
    (P.RESPONDING, E.UPSTREAM_DONE_EARLY): (P.DRAINING, _DONE_UPSTREAM),
    (P.RESPONDING, E.UPSTREAM_FAILED): (P.CUTTING, (C.CUT,)),
    (P.RESPONDING, E.CLIENT_BODY_END): (P.RESPONDING, (C.END_UPSTREAM_BODY,)),
    (P.RESPONDING, E.REVOKED): (P.CUTTING, (C.DROP_UPSTREAM, C.CUT_REVOKED)),
    (P.RESPONDING, E.TIMED_OUT): (P.CUTTING, (C.DROP_UPSTREAM, C.CUT)),
    (P.RESPONDING, E.CLIENT_LOST): (P.DONE, _RELEASE),
    # Answered in full; the rest of the body is read and dropped.
    (P.DRAINING, E.CLIENT_BODY_END): (P.DONE, _FINISH),
    (P.DRAINING, E.REVOKED): (P.CUTTING, (C.CUT_REVOKED,)),
    (P.DRAINING, E.TIMED_OUT): (P.CUTTING, (C.CUT,)),
    (P.DRAINING, E.CLIENT_LOST): (P.DONE, _FINISH),
    # Cut: the connection's loss ends it.
    (P.CUTTING, E.CLIENT_BODY_END): (P.CUTTING, _NONE),
    (P.CUTTING, E.REVOKED): (P.CUTTING, (C.CUT_REVOKED,)),
    (P.CUTTING, E.TIMED_OUT): (P.CUTTING, _NONE),  # already being cut
    (P.CUTTING, E.CLIENT_LOST): (P.DONE, _FINISH),
    # Absorbing.
    **{(P.DONE, event): (P.DONE, _NONE) for event in Event},
}

# The same table as a grid indexed by phase, then event (None: not accepted): a step
# is two tuple indexings, no key tuple to build, no hashing.
_BY_PHASE: tuple[tuple[Transition | None, ...], ...] = tuple(
    tuple(TABLE.get((phase, event)) for event in Event) for phase in Phase
)

# The phases in which something was written to the device as this request's answer.
ANSWER_STARTED = frozenset({P.RESPONDING, P.DRAINING, P.CUTTING, P.DONE})
# The phases in which what is left of the request body is read and dropped: the answer
# is complete or cut, the body only keeps the connection's framing (RFC 9112 6.3).
DROPS_BODY = frozenset({P.DRAINING, P.CUTTING, P.DONE})


def step(phase: Phase, event: Event) -> Transition:
    """The phase after ``event`` and the commands to carry out; ``UnexpectedEvent``
    when ``phase`` does not accept it."""
    move = _BY_PHASE[phase][event]
    if move is None:
        raise UnexpectedEvent(phase, event)
    return move


def accepts(phase: Phase, event: Event) -> bool:
    return _BY_PHASE[phase][event] is not None


# Indexed by whether the request is over with the answer (its body complete, or the
# connection closes after it); an answer that comes early leaves the body to drop.
_ANSWER_EVENTS = (E.ANSWERED_EARLY, E.ANSWERED)
_UPSTREAM_DONE_EVENTS = (E.UPSTREAM_DONE_EARLY, E.UPSTREAM_DONE)


def answer_event(body_complete: bool, closing: bool) -> Event:
    """The event for our own answer once written."""
    return _ANSWER_EVENTS[body_complete or closing]


def upstream_done_event(body_complete: bool, closing: bool) -> Event:
    """The event for the end of the upstream's answer."""
    return _UPSTREAM_DONE_EVENTS[body_complete or closing]


def head_event(status: int, *, head_only: bool) -> Event:
    """A NEGOTIATE leg carries no identity: nothing but a challenge may answer it."""
    return E.UPSTREAM_HEAD_UNAUTHENTICATED if head_only and status != 401 else E.UPSTREAM_HEAD
