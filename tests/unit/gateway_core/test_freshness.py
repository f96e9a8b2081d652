"""Policy freshness: fresh -> stale -> expired, and what each means per fail mode."""

from __future__ import annotations

import pytest

from onprem_gateway.core.freshness import (
    ENFORCEMENT,
    STALE_GRACE_S,
    Enforcement,
    Level,
    freshness,
    level_for,
)
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import FailMode
from tests.unit.gateway_core.builders import NOW, snapshot

REFRESH = 3600
MAX_AGE = 86_400


def index(fail_mode: FailMode = FailMode.CLOSED) -> PolicyIndex:
    snap = snapshot(refresh_interval_s=REFRESH, max_policy_age_s=MAX_AGE, fail_mode=fail_mode)
    return PolicyIndex.from_snapshot(snap, confirmed_at=NOW)


@pytest.mark.parametrize(
    ("age", "level"),
    [
        (0, Level.FRESH),
        (REFRESH, Level.FRESH),
        (REFRESH + STALE_GRACE_S, Level.FRESH),
        (REFRESH + STALE_GRACE_S + 1, Level.STALE),
        (MAX_AGE, Level.STALE),
        (MAX_AGE + 1, Level.EXPIRED),
        (-30, Level.FRESH),  # a clock that stepped back is age 0, not negative
    ],
)
def test_levels_by_age(age: float, level: Level) -> None:
    state = freshness(index(), NOW + age)
    assert state.level is level
    assert state.age_s == max(0.0, age)


@pytest.mark.parametrize(
    ("level", "mode", "enforcement", "ready"),
    [
        (Level.MISSING, FailMode.CLOSED, Enforcement.BLOCK_ALL, False),
        (Level.MISSING, FailMode.OPEN, Enforcement.BLOCK_ALL, False),
        (Level.FRESH, FailMode.CLOSED, Enforcement.ENFORCE, True),
        (Level.FRESH, FailMode.OPEN, Enforcement.ENFORCE, True),
        (Level.STALE, FailMode.CLOSED, Enforcement.ENFORCE, True),
        (Level.STALE, FailMode.OPEN, Enforcement.ENFORCE, True),
        (Level.EXPIRED, FailMode.CLOSED, Enforcement.BLOCK_ALL, False),
        (Level.EXPIRED, FailMode.OPEN, Enforcement.ENFORCE, False),
    ],
)
def test_enforcement_table(
    level: Level, mode: FailMode, enforcement: Enforcement, ready: bool
) -> None:
    assert ENFORCEMENT[level, mode] is enforcement
    ages = {Level.FRESH: 0, Level.STALE: REFRESH * 2, Level.EXPIRED: MAX_AGE * 2}
    policy = PolicyIndex.empty() if level is Level.MISSING else index(mode)
    state = freshness(policy, NOW + ages.get(level, 0))
    assert (state.level, state.enforcement, state.ready) == (level, enforcement, ready)
    assert state.fail_open is (level is Level.EXPIRED and mode is FailMode.OPEN)


def test_table_covers_every_combination() -> None:
    assert set(ENFORCEMENT) == {(level, mode) for level in Level for mode in FailMode}


def test_confirmation_makes_an_expired_policy_fresh_again() -> None:
    old = index()
    later = NOW + MAX_AGE * 3
    assert freshness(old, later).level is Level.EXPIRED
    assert freshness(old.with_confirmation(later), later).level is Level.FRESH


def test_stale_threshold_never_passes_expiry() -> None:
    # refresh interval longer than the maximum age: expiry still wins
    assert level_for(1000, refresh_interval_s=5000, max_policy_age_s=900) is Level.EXPIRED
