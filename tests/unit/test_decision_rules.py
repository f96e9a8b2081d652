"""The decision-rule names of the contract: every step the gateway's decision can report
has a name and an administrator's label, and a cluster rule's name round-trips."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from onprem_gateway.core import decision
from seg_contract.decision_rules import (
    RULE_LABELS,
    DecisionRule,
    cluster_rule,
    is_cluster_rule,
    rule_label,
)


def test_every_rule_has_a_label() -> None:
    assert set(RULE_LABELS) == set(DecisionRule)


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        ("unknown_device", "Unknown device"),
        ("override", "Manual override"),
        (cluster_rule("ios-16"), "Cluster rule ios-16"),
        ("rule:", "Cluster rule "),
        ("from_a_newer_gateway", "from_a_newer_gateway"),
        ("", ""),
    ],
)
def test_rule_label(rule: str, label: str) -> None:
    assert rule_label(rule) == label


def test_cluster_rule_names_are_told_apart() -> None:
    assert is_cluster_rule(cluster_rule("x"))
    assert not any(is_cluster_rule(rule) for rule in DecisionRule)


def test_the_decision_spells_no_rule_name_of_its_own() -> None:
    """Every rule the decision reports is a contract name: no string literal in the
    module equals one (it would be a second definition)."""
    tree = ast.parse(Path(decision.__file__).read_text())
    keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys}
    literals = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys
    }
    assert not literals & {str(rule) for rule in DecisionRule}
