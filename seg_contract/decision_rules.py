"""The names of what decided an access decision, as the gateway reports them.

Every access event carries ``rule``: which step of the gateway's decision answered
(``onprem_gateway.core.decision`` documents the precedence). The control plane counts
and explains events by it, and the console shows it in words; all of them take the
names from here (the console's script module ``rules.js`` is rendered from this module
when the dashboard is served, so there is no second copy to keep in step).

A cluster rule is reported as ``rule:<rule id>``; an unknown name (from a newer gateway)
is shown as sent.
"""

from __future__ import annotations

from enum import StrEnum


class DecisionRule(StrEnum):
    """The decision steps, by the name an access event carries in ``rule``."""

    NO_POLICY = "no_policy"
    FAIL_CLOSED = "fail_closed"
    USER_BLOCK = "user_block"
    OPTIONS = "options"
    AUTODISCOVER = "autodiscover"
    OVERRIDE = "override"
    ENTRY = "entry"
    UNKNOWN_DEVICE = "unknown_device"


# A cluster rule decided: ``rule:<id>``.
CLUSTER_RULE_PREFIX = "rule:"

# For administrators (console, CLI): what each step means in a few words.
RULE_LABELS: dict[DecisionRule, str] = {
    DecisionRule.ENTRY: "Device entry",
    DecisionRule.OVERRIDE: "Manual override",
    DecisionRule.UNKNOWN_DEVICE: "Unknown device",
    DecisionRule.USER_BLOCK: "User blocked",
    DecisionRule.FAIL_CLOSED: "Fail closed: policy too old",
    DecisionRule.NO_POLICY: "No policy loaded",
    DecisionRule.OPTIONS: "OPTIONS request",
    DecisionRule.AUTODISCOVER: "Autodiscover request",
}
CLUSTER_RULE_LABEL = "Cluster rule"


def cluster_rule(rule_id: str) -> str:
    """The ``rule`` of an event a cluster rule decided."""
    return CLUSTER_RULE_PREFIX + rule_id


def is_cluster_rule(rule: str) -> bool:
    return rule.startswith(CLUSTER_RULE_PREFIX)


def rule_label(rule: str) -> str:
    """``rule:ios-old`` -> ``Cluster rule ios-old``; a name not known here as sent."""
    if rule in RULE_LABELS:
        return RULE_LABELS[DecisionRule(rule)]
    if is_cluster_rule(rule):
        return f"{CLUSTER_RULE_LABEL} {rule.removeprefix(CLUSTER_RULE_PREFIX)}"
    return rule
