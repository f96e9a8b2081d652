"""The admission decision for one request: parse, identify, decide. Pure.

``admit`` is what the data path asks for every EAS and Autodiscover request, and what
the property tests exercise: the user a forwarded request is decided on is always the
user its credentials authenticate (``identity.py``), never the query's ``User=``
(except under ``device_only``, for a device entry of that very user). Outcomes:

- ``Admitted``: forward it (credential substitution may still refuse it);
- ``Blocked``: the policy refuses it; answer ``response`` (``block_responses``);
- ``Refused``: malformed, or no identity the gateway accepts (400 / 401);
- ``HandshakeLeg``: an NTLM NEGOTIATE leg, forwarded without its body and without a
  decision: only the server's 401 challenge is relayed (``proxy/flow.py``).

``redecide`` is the decision part alone, for a request already in flight when the
policy changes (revocation of held requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from onprem_gateway.core.block_responses import BlockResponse, blocked_response
from onprem_gateway.core.decision import AUTODISCOVER, decide
from onprem_gateway.core.eas_request import EasRequestError, parse
from onprem_gateway.core.facts import Decision, RequestFacts, with_user
from onprem_gateway.core.identity import (
    RULE_UNVERIFIABLE,
    Binding,
    Handshake,
    Identity,
    Source,
    Unidentified,
    VerifyBearer,
    identify,
)
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, normalize_user

RULE_MALFORMED = "malformed"

# Commands whose requests may legally stay open up to 3540 s (MS-ASCMD 2.2.1.13 Ping
# HeartbeatInterval; 2.2.1.21 Sync Wait / HeartbeatInterval): they get the long-poll
# idle timeout on both legs.
LONG_POLL_COMMANDS = frozenset({"Ping", "Sync"})


@dataclass(frozen=True, slots=True)
class Admitted:
    facts: RequestFacts  # ``user`` is the identity's user, normalised
    decision: Decision
    identity: Identity

    @property
    def held(self) -> bool:
        """A long-poll command: the long-poll idle timeout applies."""
        return self.facts.command in LONG_POLL_COMMANDS


@dataclass(frozen=True, slots=True)
class Blocked:
    facts: RequestFacts
    decision: Decision
    response: BlockResponse


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    reason: str
    rule: str
    facts: RequestFacts | None  # None when the request could not be parsed
    challenge: bool = False  # a 401: the answer carries the gateway's challenges
    bearer_error: str = ""


@dataclass(frozen=True, slots=True)
class HandshakeLeg:
    facts: RequestFacts
    handshake: Handshake


Outcome = Admitted | Blocked | Refused | HandshakeLeg


def autodiscover_facts(method: str, headers: Mapping[str, str]) -> RequestFacts:
    """The facts of an Autodiscover request (MS-OXDSCLI): no DeviceId, no query; it is
    decided by user like OPTIONS."""
    agent = headers.get("user-agent", "")[:512]
    return RequestFacts(
        method=method,
        command=AUTODISCOVER,
        user="",
        device_id="",
        device_type="",
        protocol_version="",
        policy_key=None,
        user_agent=agent if agent.isprintable() else "",
        query_form="none",
        parameters=MappingProxyType({}),
    )


def admit(
    method: str,
    target: str,
    headers: Mapping[str, str],
    *,
    autodiscover: bool,
    bound: Binding | None,
    policy: PolicyIndex,
    now: float,
    verify_bearer: VerifyBearer,
) -> Outcome:
    """Decide one request. ``headers`` answers lower-case names."""
    if autodiscover:
        facts = autodiscover_facts(method, headers)
    else:
        try:
            facts = parse(method, target, headers)
        except EasRequestError as exc:
            return Refused(400, f"bad EAS request: {exc.reason}", RULE_MALFORMED, None)
    who = identify(
        headers.get("authorization"),
        bound=bound,
        query_user=facts.raw_user,
        unverifiable=policy.settings.unverifiable_identity,
        verify_bearer=verify_bearer,
    )
    if isinstance(who, Unidentified):
        return Refused(
            who.status, who.reason, who.rule, facts, challenge=True, bearer_error=who.bearer_error
        )
    if isinstance(who, Handshake):
        return HandshakeLeg(with_user(facts, "", ""), who)
    # Usually the query's User= is the authenticated user's name as presented: its
    # normalised form is already in the facts.
    user = facts.user if who.user == facts.raw_user else normalize_user(who.user)
    if not user:
        return Refused(400, "user name is empty once normalised", RULE_MALFORMED, facts)
    if user != facts.user or who.user != facts.raw_user:  # usually equal: keep the facts
        facts = with_user(facts, user, who.user)
    decision = redecide(facts, who.source, policy, now)
    if decision.effective is not Access.ALLOW:
        return Blocked(facts, decision, blocked_response(facts, decision))
    return Admitted(facts, decision, who)


def redecide(facts: RequestFacts, source: Source, policy: PolicyIndex, now: float) -> Decision:
    """The decision for identified facts: the policy's (``core.decision``), and for an
    unverified identity (``device_only``) only on a device entry of that user."""
    if source is Source.UNVERIFIED and (
        not facts.device_id or policy.entry(facts.user, facts.device_id) is None
    ):
        what = (
            "this request names no device"
            if not facts.device_id
            else (f"device {facts.device_id!r} is not one of {facts.user!r}'s")
        )
        return Decision(
            Access.BLOCK,
            f"the user cannot be verified and {what} (unverifiable_identity = device_only)",
            RULE_UNVERIFIABLE,
        )
    return decide(facts, policy, now)
