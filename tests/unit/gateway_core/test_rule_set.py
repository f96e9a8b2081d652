"""Compiled cluster rules: glob semantics, order, and the bounded first-match memo."""

from __future__ import annotations

from onprem_gateway.core import rule_set as rule_set_module
from onprem_gateway.core.rule_set import RuleSet
from seg_contract import Access, RuleField
from tests.unit.gateway_core.builders import rule

RULES = (
    rule("ua-allow", RuleField.USER_AGENT, "Outlook-*", Access.ALLOW),
    rule("os-block", RuleField.OS, "Android [89]*", Access.BLOCK),
    rule("type-block", RuleField.DEVICE_TYPE, "WP?", Access.BLOCK),
    rule("ua-block", RuleField.USER_AGENT, "*Outlook*", Access.BLOCK),
)


def first(rules: RuleSet, **facts: str) -> str | None:
    values = {"device_type": "", "model": "", "os": "", "user_agent": ""} | facts
    found = rules.first_match(**values)
    return None if found is None else found.rule.id


def test_list_order_decides_across_fields() -> None:
    rules = RuleSet(RULES)
    assert first(rules, user_agent="Outlook-iOS/2", os="Android 9") == "ua-allow"
    assert first(rules, user_agent="MyOutlook/1", os="Android 9") == "os-block"
    assert first(rules, user_agent="MyOutlook/1") == "ua-block"
    assert first(rules, device_type="wp8") == "type-block"  # case-insensitive
    assert first(rules, device_type="WP10") is None  # '?' is exactly one character
    assert first(rules, os="Android 10") is None  # character class
    assert first(rules) is None


def test_glob_metacharacters_are_not_regex() -> None:
    rules = RuleSet((rule("dot", RuleField.MODEL, "iPhone.1", Access.BLOCK),))
    assert first(rules, model="iPhone.1") == "dot"
    assert first(rules, model="iPhoneX1") is None


def test_memo_is_bounded_and_stays_correct(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rule_set_module, "MEMO_LIMIT", 8)
    rules = RuleSet(RULES)
    for n in range(50):
        assert first(rules, user_agent=f"Client{n}") is None
        assert len(rules._memo) <= 8
    assert first(rules, user_agent="Outlook-x") == "ua-allow"
    assert first(rules, user_agent="Outlook-x") == "ua-allow"  # from the memo


def test_empty_rule_set_matches_nothing() -> None:
    assert first(RuleSet(()), user_agent="anything") is None
