"""What a pong means for the node's policy: the judgement table, and the report interval."""

from __future__ import annotations

import pytest

from onprem_gateway.core.convergence import PongAction, judge_pong, keepalive_interval

CONFIRM, DELTA, REPLACE = PongAction.CONFIRM, PongAction.DELTA, PongAction.REPLACE


@pytest.mark.parametrize(
    ("committed", "check", "applied", "newest", "pending", "action", "reason", "next_pending"),
    [
        # In step: the pong vouches for the policy.
        (10, "in_sync", 10, 10, None, CONFIRM, "", None),
        (10, "unchecked", 10, 7, None, CONFIRM, "", None),
        # The control plane is ahead (a missed push): a delta.
        (12, "unchecked", 10, 10, None, DELTA, "", None),
        (12, "in_sync", 10, 10, None, DELTA, "", None),
        # Diverged wins over everything else.
        (12, "diverged", 10, 10, None, REPLACE, "diverged", None),
        (10, "diverged", 10, 10, 11, REPLACE, "diverged", None),
        # Holding a version above W for a moment is legitimate (a push overtook the
        # pong): remembered, not acted on...
        (10, "unchecked", 11, 11, None, CONFIRM, "", 11),
        (10, "unchecked", 10, 11, None, CONFIRM, "", 11),
        # ... and forgotten once W has reached it.
        (11, "in_sync", 11, 11, 11, CONFIRM, "", None),
        (12, "unchecked", 11, 11, 11, DELTA, "", None),
        # Still not committed one pong later: it does not exist; replace.
        (10, "unchecked", 10, 999, 999, REPLACE, "uncommitted", None),
        (10, "unchecked", 15, 15, 15, REPLACE, "uncommitted", None),
        # W moved but not as far as what the node held: still uncommitted.
        (12, "unchecked", 12, 999, 999, REPLACE, "uncommitted", None),
    ],
)
def test_pong_judgement_table(
    committed: int,
    check: str,
    applied: int,
    newest: int,
    pending: int | None,
    action: PongAction,
    reason: str,
    next_pending: int | None,
) -> None:
    judgement = judge_pong(
        committed=committed,
        digest_check=check,  # type: ignore[arg-type]
        applied=applied,
        newest_held=newest,
        pending_uncommitted=pending,
    )
    assert (judgement.action, judgement.reason, judgement.pending_uncommitted) == (
        action,
        reason,
        next_pending,
    )


def test_what_a_replacement_brought_is_trusted() -> None:
    # A control-plane writer stuck on v3 while v4 is written: the replacement snapshot
    # holds v4 again; that is the control plane's word, not a reason for another one.
    after = judge_pong(
        committed=2,
        digest_check="unchecked",
        applied=2,
        newest_held=4,
        pending_uncommitted=None,
        trusted_up_to=4,
    )
    assert after.action is CONFIRM and after.pending_uncommitted is None
    beyond = judge_pong(
        committed=2,
        digest_check="unchecked",
        applied=2,
        newest_held=5,
        pending_uncommitted=None,
        trusted_up_to=4,
    )
    assert beyond.pending_uncommitted == 5


def test_a_hand_edited_version_is_replaced_after_two_pongs() -> None:
    first = judge_pong(
        committed=5, digest_check="unchecked", applied=5, newest_held=999, pending_uncommitted=None
    )
    assert first.action is CONFIRM and first.pending_uncommitted == 999
    second = judge_pong(
        committed=6,
        digest_check="unchecked",
        applied=5,
        newest_held=999,
        pending_uncommitted=first.pending_uncommitted,
    )
    assert (second.action, second.reason) == (REPLACE, "uncommitted")


@pytest.mark.parametrize(
    ("report", "override", "expected"),
    [
        (30.0, None, 30.0),  # the cluster's setting
        (30.0, 5.0, 5.0),  # the node may report more often...
        (30.0, 120.0, 30.0),  # ... never less often than the cluster asks
        (300.0, None, 300.0),
        (900.0, None, 540.0),  # never past API Gateway's idle limit
    ],
)
def test_keepalive_interval(report: float, override: float | None, expected: float) -> None:
    assert keepalive_interval(report, override, 540.0) == expected
