"""A cluster's device rules, compiled once, with a memo of first matches.

Rules (``seg_contract.DeviceRule``) are case-insensitive shell globs on one request or
device fact each, evaluated in list order, first match wins. A fleet repeats the same few
hundred device types, models, OS strings and user agents, so the first matching rule per
(field, value) is remembered: the request path does at most four dict lookups instead of
one glob match per rule. The memo is the only mutable part; it is a pure cache (the
rules never change for a given set) and it is bounded.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from seg_contract import DeviceRule, RuleField

# Distinct (field, value) pairs remembered per rule set; the memo is cleared when full.
MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A ``DeviceRule`` with its glob compiled once (case-insensitive fnmatch)."""

    rule: DeviceRule
    matcher: re.Pattern[str]

    @classmethod
    def compile(cls, rule: DeviceRule) -> CompiledRule:
        return cls(rule, re.compile(fnmatch.translate(rule.pattern), re.IGNORECASE | re.DOTALL))

    @property
    def field(self) -> RuleField:
        return self.rule.field

    def matches(self, value: str) -> bool:
        return self.matcher.match(value) is not None


class RuleSet:
    """Compiled rules in order, and the memo of each (field, value)'s first match."""

    __slots__ = ("_fields", "_memo", "rules")

    def __init__(self, rules: Iterable[DeviceRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(CompiledRule.compile(r) for r in rules)
        # Only the fields some rule looks at are ever looked up.
        self._fields = tuple(f for f in RuleField if any(c.field is f for c in self.rules))
        self._memo: dict[tuple[RuleField, str], int] = {}

    def first_match(
        self, *, device_type: str, model: str, os: str, user_agent: str
    ) -> CompiledRule | None:
        """The first rule (in list order) that matches these facts, or None."""
        rules = self.rules
        memo = self._memo
        best = len(rules)
        for field in self._fields:
            if field is RuleField.DEVICE_TYPE:
                value = device_type
            elif field is RuleField.USER_AGENT:
                value = user_agent
            elif field is RuleField.MODEL:
                value = model
            else:
                value = os
            key = (field, value)
            position = memo.get(key)
            if position is None:
                position = self._first_position(field, value)
                if len(memo) >= MEMO_LIMIT:
                    memo.clear()
                memo[key] = position
            best = min(best, position)
        return rules[best] if best < len(rules) else None

    def _first_position(self, field: RuleField, value: str) -> int:
        for position, compiled in enumerate(self.rules):
            if compiled.field is field and compiled.matches(value):
                return position
        return len(self.rules)
