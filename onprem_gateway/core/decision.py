"""The access decision: a pure function of (request facts, policy index, now).

Precedence (first step that answers wins; the table test in
``tests/unit/gateway_core/test_decision.py`` has one row per step)::

  0. Freshness (``core.freshness``): no policy ever loaded -> BLOCK ``no_policy``;
     older than ``max_policy_age_s`` with fail mode *closed* -> BLOCK ``fail_closed``;
     fail mode *open* -> continue with the last-known-good policy.
  1. Per-user block (``settings.blocked_users``) -> BLOCK ``user_block``. It beats
     everything below, including an admin's device allow: blocking a person is the
     broader, deliberate act.
  2. OPTIONS (no DeviceId; MS-ASHTTP 2.2.1.1 says it carries none) -> ALLOW ``options``;
     Autodiscover (command ``Autodiscover``, no DeviceId either) -> ALLOW
     ``autodiscover``. Only the user can be judged, and steps 0 and 1 already did.
  3. An admin's override for (user, device) (entry with source ``manual``) -> its access,
     rule ``override``. The most specific, deliberate statement wins over cluster rules.
  4. A (user, device) entry that blocks or quarantines (compliance, unenrolment)
     -> its access, rule ``entry``. Allow-list rules never re-admit a non-compliant device.
  5. Cluster rules, in list order, first match wins -> the rule's action, rule
     ``rule:<id>``. For a device whose entry allows (compliant), only a matching
     block/quarantine rule changes the outcome (an explicit block list beats a compliance
     allow, as in commercial SEGs: "block all Android 9" must hold for compliant phones
     too); an allow rule that matches first just confirms the allow.
     Rule facts: ``device_type`` and ``user_agent`` from the request (the entry's device
     type when the request has none); ``model`` and ``os`` from the entry (the MDM's
     report), "" for a device the MDM never described, so a ``*`` glob matches it and
     any narrower glob does not.
  6. Entry allows and no rule objected -> ALLOW ``entry``.
  7. Unknown device (no entry, no rule) -> ``settings.unknown_device_action``, rule
     ``unknown_device``.

Quarantine: the outcome stays QUARANTINE (that is what the access event records), but
for the commands in ``QUARANTINE_ADMITS`` (Provision, FolderSync, Settings) the Decision
is ``admitted`` and the request goes through, so the device can set up its account,
receive policy or a remote wipe, and report what it is; every other command gets the
blocked answer (``core.block_responses``).

Test (monitor-only) mode: when ``settings.test_mode`` is on and the outcome is not ALLOW,
the Decision keeps the outcome but ``enforced`` is False; the request goes through and
the access event records what would have happened. This applies to every step,
``fail_closed`` included: an admin who chose monitor-only did not choose to cut mail.

Autodiscover is not an EAS command; ``core.admission`` gives it the facts of a request
without a device (command ``Autodiscover``), so steps 0-2 decide it: no policy or a
closed fail mode refuse it, a blocked user is refused, anyone else is let through.
``explain`` runs the same code with a trace, for the diagnostics endpoint; it evaluates
the rules one by one (the reference), while ``decide`` uses the index's memo of first
matches (``PolicyIndex.first_rule``); a property test keeps the two in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from onprem_gateway.core.facts import Decision, RequestFacts
from onprem_gateway.core.freshness import Enforcement, FreshnessState, Level, freshness
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.rule_set import CompiledRule
from seg_contract import Access, DeviceEntry, EntrySource, RuleField
from seg_contract.decision_rules import DecisionRule, cluster_rule

AUTODISCOVER = "Autodiscover"

# Commands a quarantined device may still use: none of them reads, sends or watches mail.
QUARANTINE_ADMITS = frozenset({"Provision", "FolderSync", "Settings"})


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why ``decision`` came out as it did: for the diagnostics endpoint and logs.
    Never contains credentials."""

    decision: Decision
    freshness: FreshnessState
    entry: DeviceEntry | None
    rule_facts: dict[str, str]
    steps: tuple[str, ...]
    policy_version: int
    cluster_id: str

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        entry = self.entry
        return {
            "access": self.decision.access.value,
            "effective": self.decision.effective.value,
            "enforced": self.decision.enforced,
            "rule": self.decision.rule,
            "reason": self.decision.reason,
            "policy": {
                "cluster_id": self.cluster_id,
                "version": self.policy_version,
                "freshness": self.freshness.level.value,
                "age_s": round(self.freshness.age_s, 3),
                "fail_mode": self.freshness.fail_mode.value,
            },
            "entry": None
            if entry is None
            else {
                "access": entry.access.value,
                "source": entry.source.value,
                "reason": entry.reason,
                "version": entry.version,
                "updated_at": entry.updated_at.isoformat(),
                "model": entry.model,
                "os": entry.os,
                "device_type": entry.device_type,
            },
            "rule_facts": dict(self.rule_facts),
            "steps": list(self.steps),
        }


def decide(facts: RequestFacts, policy: PolicyIndex, now: float) -> Decision:
    """The decision for one request (see the module docstring for the precedence)."""
    return _decide(facts, policy, now, None)


def explain(facts: RequestFacts, policy: PolicyIndex, now: float) -> Explanation:
    """``decide`` with its reasoning, step by step."""
    steps: list[str] = []
    decision = _decide(facts, policy, now, steps)
    entry = policy.entry(facts.user, facts.device_id) if facts.device_id else None
    return Explanation(
        decision=decision,
        freshness=freshness(policy, now),
        entry=entry,
        rule_facts=_rule_facts(facts, entry),
        steps=tuple(steps),
        policy_version=policy.version,
        cluster_id=policy.cluster_id,
    )


def _rule_facts(facts: RequestFacts, entry: DeviceEntry | None) -> dict[str, str]:
    return {
        RuleField.DEVICE_TYPE.value: facts.device_type or (entry.device_type if entry else ""),
        RuleField.MODEL.value: entry.model if entry else "",
        RuleField.OS.value: entry.os if entry else "",
        RuleField.USER_AGENT.value: facts.user_agent,
    }


def _finish(
    access: Access,
    reason: str,
    rule: str,
    test_mode: bool,
    trace: list[str] | None,
    *,
    command: str = "",
) -> Decision:
    enforced = not (test_mode and access is not Access.ALLOW)
    admitted = access is Access.QUARANTINE and command in QUARANTINE_ADMITS
    if trace is not None:
        trace.append(
            f"decision: {access.value} by {rule}"
            + ("" if enforced else " (test mode: not enforced, request let through)")
            + (f" ({command} is admitted in quarantine)" if admitted else "")
        )
    return Decision(access, reason, rule, enforced, admitted)


# The precedence reads top to bottom as one numbered list, one return per step: splitting
# it to please the branch counter would hide the order this function exists to state.
def _decide(  # noqa: PLR0911, PLR0912
    facts: RequestFacts, policy: PolicyIndex, now: float, trace: list[str] | None
) -> Decision:
    settings = policy.settings
    test_mode = settings.test_mode

    # 0. Freshness. The common case (loaded, younger than the maximum age) skips
    # building a FreshnessState.
    if not policy.loaded or now - policy.confirmed_at > settings.max_policy_age_s:
        failed = _stale_policy(policy, now, trace)
        if failed is not None:
            return failed
    elif trace is not None:
        trace.append(f"freshness: policy version {policy.version} is within its maximum age")

    # 1. Per-user block.
    user = facts.user
    if user and user in policy.blocked_users:
        return _finish(Access.BLOCK, "user is blocked", DecisionRule.USER_BLOCK, test_mode, trace)
    if trace is not None:
        trace.append(f"user {user!r} is not on the cluster's blocked-user list")

    # 2. OPTIONS carries no DeviceId.
    device_id = facts.device_id
    entry: DeviceEntry | None = None
    if not device_id:
        if facts.command == AUTODISCOVER:
            return _finish(
                Access.ALLOW,
                "Autodiscover is decided by user only",
                DecisionRule.AUTODISCOVER,
                test_mode,
                trace,
            )
        if facts.method == "OPTIONS" or not facts.command:
            return _finish(
                Access.ALLOW,
                "OPTIONS is decided by user only",
                DecisionRule.OPTIONS,
                test_mode,
                trace,
            )
    else:
        entry = policy.entry(user, device_id)

    # 3./4. The (user, device) entry.
    if entry is not None:
        if trace is not None:
            trace.append(
                f"entry: {entry.access.value} from {entry.source.value} "
                f"(version {entry.version}): {entry.reason}"
            )
        if entry.source is EntrySource.MANUAL:
            return _finish(
                entry.access,
                entry.reason or "admin override",
                DecisionRule.OVERRIDE,
                test_mode,
                trace,
                command=facts.command,
            )
        if entry.access is not Access.ALLOW:
            return _finish(
                entry.access,
                entry.reason,
                DecisionRule.ENTRY,
                test_mode,
                trace,
                command=facts.command,
            )
    elif trace is not None:
        trace.append(f"no entry for user {user!r} and device {device_id!r}")

    # 5. Cluster rules, first match wins.
    if policy.rules:
        by_rule = _match_rules(facts, entry, policy, trace)
        if by_rule is not None:
            return by_rule

    # 6. Compliant device.
    if entry is not None:
        return _finish(
            Access.ALLOW, entry.reason or "compliant", DecisionRule.ENTRY, test_mode, trace
        )

    # 7. Unknown device.
    action = settings.unknown_device_action
    reason = f"unknown device: the cluster's action is {action.value}"
    return _finish(
        action, reason, DecisionRule.UNKNOWN_DEVICE, test_mode, trace, command=facts.command
    )


def _stale_policy(policy: PolicyIndex, now: float, trace: list[str] | None) -> Decision | None:
    """Step 0 for a policy past its maximum age (or never loaded): the fail-closed
    decision, or None to go on with the last-known-good policy."""
    settings = policy.settings
    state = freshness(policy, now)
    if trace is not None:
        trace.append(
            f"freshness: {state.level.value}, age {state.age_s:.0f}s, "
            f"fail mode {state.fail_mode.value}"
        )
    if state.enforcement is not Enforcement.BLOCK_ALL:
        if trace is not None:
            trace.append("fail mode open: enforcing the last-known-good policy")
        return None
    if state.level is Level.MISSING:
        reason, rule = "no policy has been loaded yet", DecisionRule.NO_POLICY
    else:
        reason = (
            f"policy is {state.age_s:.0f}s old (max {settings.max_policy_age_s}s) and the "
            "cluster fails closed"
        )
        rule = DecisionRule.FAIL_CLOSED
    return _finish(Access.BLOCK, reason, rule, settings.test_mode, trace)


def _match_rules(
    facts: RequestFacts, entry: DeviceEntry | None, policy: PolicyIndex, trace: list[str] | None
) -> Decision | None:
    """Step 5: the first matching cluster rule's decision, or None (no rule decides)."""
    model = entry.model if entry is not None else ""
    os_name = entry.os if entry is not None else ""
    device_type = facts.device_type or (entry.device_type if entry is not None else "")
    if trace is None:
        # Hot path: the index remembers each (field, value)'s first match.
        compiled = policy.first_rule(
            device_type=device_type, model=model, os=os_name, user_agent=facts.user_agent
        )
    else:
        values = {
            RuleField.DEVICE_TYPE: device_type,
            RuleField.MODEL: model,
            RuleField.OS: os_name,
            RuleField.USER_AGENT: facts.user_agent,
        }
        compiled = _first_rule_traced(policy, values, trace)
    if compiled is None:
        return None
    rule = compiled.rule
    if entry is not None and rule.action is Access.ALLOW:
        return None  # an allow rule confirms a compliant device; step 6 answers
    return _finish(
        rule.action,
        rule.description or f"{rule.field.value} matches {rule.pattern!r}",
        cluster_rule(rule.id),
        policy.settings.test_mode,
        trace,
        command=facts.command,
    )


def _first_rule_traced(
    policy: PolicyIndex, values: dict[RuleField, str], trace: list[str]
) -> CompiledRule | None:
    """The reference evaluation, rule by rule, with a trace (``explain``). A test checks
    it always agrees with ``PolicyIndex.first_rule``."""
    for compiled in policy.rules:
        rule = compiled.rule
        value = values[rule.field]
        if compiled.matches(value):
            trace.append(
                f"rule {rule.id!r} ({rule.field.value} ~ {rule.pattern!r}) matches "
                f"{value!r}: {rule.action.value}"
            )
            return compiled
    trace.append(f"none of {len(policy.rules)} cluster rules matches")
    return None
