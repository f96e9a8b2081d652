"""The access decision: one table row per precedence step (decision.py's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core.decision import QUARANTINE_ADMITS, decide, explain
from onprem_gateway.core.facts import RequestFacts
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, EntrySource, FailMode, RuleField
from tests.unit.gateway_core.builders import NOW, entry, facts, rule, snapshot

A, B, Q = Access.ALLOW, Access.BLOCK, Access.QUARANTINE
MANUAL = EntrySource.MANUAL

DEVICES = (
    entry("alice", "dev1", A),
    entry("alice", "bad", B, reason="compromised device"),
    entry("alice", "q", Q, reason="checkin overdue"),
    entry("alice", "man", A, source=MANUAL, reason="CEO's tablet"),
    entry("alice", "manblock", B, source=MANUAL, reason="lost phone"),
    entry("bob", "dev2", A, model="Galaxy S8", os="Android 9.0"),
    entry("eve", "dev9", A, source=MANUAL),
)
RULES = (
    rule("allow-outlook", RuleField.USER_AGENT, "Outlook-*", A),
    rule("block-android9", RuleField.OS, "Android 9*", B),
    rule("quarantine-galaxy", RuleField.MODEL, "Galaxy*", Q),
    rule("block-wp", RuleField.DEVICE_TYPE, "WP*", B),
)


def policy(*, age_s: float = 10.0, loaded: bool = True, **settings: Any) -> PolicyIndex:
    if not loaded:
        return PolicyIndex.empty("c1")
    settings.setdefault("rules", RULES)
    settings.setdefault("blocked_users", ("CORP\\Eve",))
    snap = snapshot(devices=DEVICES, **settings)
    return PolicyIndex.from_snapshot(snap, confirmed_at=NOW - age_s)


@dataclass(frozen=True)
class Row:
    name: str
    request: RequestFacts
    expect: Access
    rule: str
    settings: dict[str, Any] = field(default_factory=dict)
    age_s: float = 10.0
    loaded: bool = True
    enforced: bool = True
    admitted: bool = False


DAY = 86_400.0
ROWS = [
    # 0. freshness
    Row("never loaded blocks", facts(), B, "no_policy", loaded=False),
    Row("expired + closed blocks everyone", facts(), B, "fail_closed", age_s=DAY + 1),
    Row(
        "expired + open keeps enforcing (allow)",
        facts(),
        A,
        "entry",
        settings={"fail_mode": FailMode.OPEN},
        age_s=DAY + 1,
    ),
    Row(
        "expired + open keeps enforcing (block)",
        facts(device_id="bad"),
        B,
        "entry",
        settings={"fail_mode": FailMode.OPEN},
        age_s=DAY + 1,
    ),
    Row("stale still enforces", facts(), A, "entry", age_s=3600 + 301),
    # 1. per-user block beats everything, even an admin allow
    Row("blocked user", facts("eve", "dev9"), B, "user_block"),
    Row("blocked user on OPTIONS", facts("eve", "", method="OPTIONS", command=""), B, "user_block"),
    # 2. OPTIONS by user only
    Row("OPTIONS allowed", facts("alice", "", method="OPTIONS", command=""), A, "options"),
    # 3. admin override beats rules
    Row("manual allow beats block rule", facts(device_id="man", device_type="WP8"), A, "override"),
    Row("manual block", facts(device_id="manblock"), B, "override"),
    # 4. a blocking / quarantining entry is final
    Row(
        "compliance block beats allow rule",
        facts(device_id="bad", user_agent="Outlook-iOS/2"),
        B,
        "entry",
    ),
    Row("compliance quarantine", facts(device_id="q"), Q, "entry"),
    Row(
        "quarantine admits FolderSync",
        facts(device_id="q", command="FolderSync"),
        Q,
        "entry",
        admitted=True,
    ),
    # 5. rules, first match wins; block rules bite compliant devices
    Row(
        "block rule on compliant device (os from entry)",
        facts("bob", "dev2"),
        B,
        "rule:block-android9",
    ),
    Row(
        "allow rule matched first confirms a compliant device",
        facts("bob", "dev2", user_agent="Outlook-Android/4"),
        A,
        "entry",
    ),
    Row(
        "allow rule admits unknown device",
        facts("carol", "new", user_agent="Outlook-iOS/2"),
        A,
        "rule:allow-outlook",
    ),
    Row(
        "block rule on unknown device", facts("carol", "new", device_type="WP8"), B, "rule:block-wp"
    ),
    Row("globs are case-insensitive", facts("carol", "new", device_type="wp8"), B, "rule:block-wp"),
    Row(
        "a block rule is not softened for Provision",
        facts("bob", "dev2", command="Provision"),
        B,
        "rule:block-android9",
    ),
    # 6. compliant device, no objection
    Row("compliant device allowed", facts(), A, "entry"),
    # 7. unknown device
    Row("unknown device follows the default (block)", facts("carol", "new"), B, "unknown_device"),
    Row(
        "unknown device quarantine setting",
        facts("carol", "new"),
        Q,
        "unknown_device",
        settings={"unknown_device_action": Q},
    ),
    Row(
        "model rule does not match a device the MDM never described",
        facts("carol", "new"),
        A,
        "unknown_device",
        settings={"unknown_device_action": A},
    ),
    # test mode
    Row(
        "test mode lets a block through",
        facts(device_id="bad"),
        B,
        "entry",
        settings={"test_mode": True},
        enforced=False,
    ),
    Row("test mode leaves allow alone", facts(), A, "entry", settings={"test_mode": True}),
    Row(
        "test mode applies to fail closed too",
        facts(),
        B,
        "fail_closed",
        settings={"test_mode": True},
        age_s=DAY + 1,
        enforced=False,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_decision_table(row: Row) -> None:
    index = policy(age_s=row.age_s, loaded=row.loaded, **row.settings)
    decision = decide(row.request, index, NOW)
    assert (decision.access, decision.rule) == (row.expect, row.rule)
    assert decision.enforced is row.enforced
    assert decision.admitted is row.admitted
    if row.enforced and not row.admitted:
        assert decision.effective is row.expect
    else:
        assert decision.effective is Access.ALLOW
    assert decision.reason


def test_quarantine_rule_matches_galaxy_model_when_os_rule_absent() -> None:
    rules = tuple(r for r in RULES if r.id != "block-android9")
    index = policy(rules=rules)
    decision = decide(facts("bob", "dev2"), index, NOW)
    assert (decision.access, decision.rule) == (Q, "rule:quarantine-galaxy")
    admitted = decide(facts("bob", "dev2", command="Settings"), index, NOW)
    assert admitted.admitted and admitted.effective is A


def test_quarantine_admits_only_connect_commands() -> None:
    assert frozenset({"Provision", "FolderSync", "Settings"}) == QUARANTINE_ADMITS
    index = policy()
    for command in ("Sync", "Ping", "ItemOperations", "SendMail", "Search", "GetAttachment"):
        decision = decide(facts(device_id="q", command=command), index, NOW)
        assert decision.effective is Q, command


def test_decide_is_pure_and_repeatable() -> None:
    index = policy()
    request = facts("bob", "dev2")
    assert decide(request, index, NOW) == decide(request, index, NOW)


def test_explain_gives_the_same_decision_and_its_steps() -> None:
    index = policy()
    request = facts("bob", "dev2")
    explanation = explain(request, index, NOW)
    assert explanation.decision == decide(request, index, NOW)
    assert explanation.entry is not None and explanation.entry.model == "Galaxy S8"
    assert explanation.rule_facts["os"] == "Android 9.0"
    text = " | ".join(explanation.steps)
    assert "rule 'block-android9'" in text and "decision: block" in text
    as_dict = explanation.as_dict()
    assert as_dict["rule"] == "rule:block-android9"
    assert as_dict["policy"]["freshness"] == "fresh"  # type: ignore[index]


def test_explain_reports_fail_open() -> None:
    index = policy(fail_mode=FailMode.OPEN, age_s=DAY + 5)
    explanation = explain(facts(), index, NOW)
    assert explanation.freshness.fail_open
    assert any("last-known-good" in step for step in explanation.steps)


# --- the memoised rule path agrees with the reference, rule-by-rule path ----------------

_values = st.sampled_from(["", "iPhone", "WP8", "wp8", "Outlook-iOS/2", "Android 9.0", "Galaxy S8"])
_rules = st.lists(
    st.builds(
        rule,
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.sampled_from(list(RuleField)),
        st.sampled_from(["*", "WP*", "Outlook-*", "Android 9*", "Galaxy*", "iphone", "?P8"]),
        st.sampled_from(list(Access)),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    rules=_rules,
    requests=st.lists(
        st.tuples(st.sampled_from(["dev1", "dev2", "new", "q"]), _values, _values), max_size=6
    ),
)
def test_memoised_rules_agree_with_explain(
    rules: list[Any], requests: list[tuple[str, str, str]]
) -> None:
    index = policy(rules=tuple(rules), blocked_users=())
    for device_id, device_type, user_agent in requests:
        user = "bob" if device_id == "dev2" else "alice"
        request = facts(user, device_id, device_type=device_type, user_agent=user_agent)
        assert decide(request, index, NOW) == explain(request, index, NOW).decision
