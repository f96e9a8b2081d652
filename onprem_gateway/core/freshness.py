"""How fresh the node's policy is, and what that means for enforcement.

Theory of operation
-------------------
The policy's *age* is ``now - confirmed_at`` (the last time the control plane vouched for
it: a snapshot, a delta, or a pong). Its level follows from the age alone:

=========  ==========================================================  ==============
level      when                                                        ready (health)
=========  ==========================================================  ==============
missing    no policy was ever loaded (not from the cloud, not from disk) no
fresh      age <= refresh_interval_s + STALE_GRACE_S                    yes
stale      older than that, up to max_policy_age_s                      yes
expired    age > max_policy_age_s                                       no
=========  ==========================================================  ==============

``stale`` means "a refresh is overdue": the node keeps enforcing, but says so in health
and metrics. Contact with the control plane (``PolicyIndex.with_confirmation``) takes any
level back to ``fresh``. What the decision does per level and the cluster's fail mode is
one table, ``ENFORCEMENT``:

- missing, either mode      -> block everything (there is nothing to enforce);
- fresh / stale, either     -> enforce the policy;
- expired + closed          -> block everything (the default: fail safe);
- expired + open            -> keep enforcing the last-known-good policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from seg_contract import FailMode

if TYPE_CHECKING:
    from onprem_gateway.core.policy_index import PolicyIndex

# A scheduled refresh can be late by a fetch timeout plus a few backoff retries; five
# minutes of slack keeps an ordinary slow refresh from flapping the node to "stale".
STALE_GRACE_S = 300.0


class Level(StrEnum):
    MISSING = "missing"
    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"


class Enforcement(StrEnum):
    ENFORCE = "enforce"  # decide with the policy
    BLOCK_ALL = "block_all"  # fail closed (or nothing loaded)


ENFORCEMENT: dict[tuple[Level, FailMode], Enforcement] = {
    (Level.MISSING, FailMode.CLOSED): Enforcement.BLOCK_ALL,
    (Level.MISSING, FailMode.OPEN): Enforcement.BLOCK_ALL,
    (Level.FRESH, FailMode.CLOSED): Enforcement.ENFORCE,
    (Level.FRESH, FailMode.OPEN): Enforcement.ENFORCE,
    (Level.STALE, FailMode.CLOSED): Enforcement.ENFORCE,
    (Level.STALE, FailMode.OPEN): Enforcement.ENFORCE,
    (Level.EXPIRED, FailMode.CLOSED): Enforcement.BLOCK_ALL,
    (Level.EXPIRED, FailMode.OPEN): Enforcement.ENFORCE,
}

_READY = frozenset({Level.FRESH, Level.STALE})


@dataclass(frozen=True, slots=True)
class FreshnessState:
    """The freshness of one policy at one instant."""

    level: Level
    age_s: float
    fail_mode: FailMode
    enforcement: Enforcement

    @property
    def ready(self) -> bool:
        """Whether a load balancer should send this node traffic."""
        return self.level in _READY

    @property
    def fail_open(self) -> bool:
        """Expired but enforcing the last-known-good policy (fail mode open)."""
        return self.level is Level.EXPIRED and self.enforcement is Enforcement.ENFORCE


def level_for(age_s: float, refresh_interval_s: float, max_policy_age_s: float) -> Level:
    """The level of a loaded policy of age ``age_s`` (pure threshold table)."""
    if age_s > max_policy_age_s:
        return Level.EXPIRED
    if age_s > refresh_interval_s + STALE_GRACE_S:
        return Level.STALE
    return Level.FRESH


def freshness(policy: PolicyIndex, now: float) -> FreshnessState:
    """The freshness of ``policy`` at ``now`` (epoch seconds). A clock that went
    backwards counts as age 0, never as negative."""
    settings = policy.settings
    if not policy.loaded:
        level = Level.MISSING
        age = 0.0
    else:
        age = max(0.0, now - policy.confirmed_at)
        level = level_for(age, settings.refresh_interval_s, settings.max_policy_age_s)
    return FreshnessState(level, age, settings.fail_mode, ENFORCEMENT[level, settings.fail_mode])
