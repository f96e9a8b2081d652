"""What a pong means for the node's policy (pure: values in, a verdict out).

The control plane answers every keepalive with a ``PushPong``: its committed version W
and its verdict on the digest the node reported. ``judge_pong`` turns that, and what the
node holds, into one action:

==========================================================  =============================
condition (first match wins)                                action
==========================================================  =============================
verdict ``diverged``                                        replace (reason ``diverged``)
the node held, one pong ago, a version above that pong's    replace (reason
W (and above what a replacement snapshot itself brought),   ``uncommitted``)
and W still has not reached it
W > applied version V                                       delta
otherwise                                                   confirm (the policy is fresh)
==========================================================  =============================

The second row catches what a digest cannot: a node whose state is not *exact* never
reports a digest, so an entry with an inflated version (a hand-edited last-known-good
file, a bug) would keep it inexact, and unverified, forever. Holding a version above W
is legitimate only for a moment (a push of W + 1 can overtake the pong that still says
W; a snapshot can include a write that committed while it was read); a version the
control plane has not committed a whole report interval later does not exist, so the
policy holding it is replaced. A writer of the control plane stuck between taking a
version and settling it for that long would look the same: the replacement snapshot
then holds its neighbours' writes again, and everything up to the newest version that
snapshot brought is trusted (``trusted_up_to``), so a stuck writer costs one extra
snapshot, never a loop of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from seg_contract.models import DigestCheck


class PongAction(StrEnum):
    CONFIRM = "confirm"  # nothing to fetch: the pong vouches for the policy
    DELTA = "delta"  # the control plane is ahead: fetch a delta since V
    REPLACE = "replace"  # the policy cannot be trusted: replace it with a snapshot


@dataclass(frozen=True, slots=True)
class PongJudgement:
    action: PongAction
    reason: str  # why a replacement (diverged, uncommitted); "" otherwise
    # The version above W the node held at this pong (checked at the next one), or None.
    pending_uncommitted: int | None


def judge_pong(
    *,
    committed: int,
    digest_check: DigestCheck,
    applied: int,
    newest_held: int,
    pending_uncommitted: int | None,
    trusted_up_to: int = 0,
) -> PongJudgement:
    """``committed``: the pong's W; ``applied``: the node's V; ``newest_held``: the newest
    version of anything the node holds; ``pending_uncommitted``: what the previous
    judgement returned; ``trusted_up_to``: the newest version the last replacement
    snapshot brought (the control plane's own word)."""
    if digest_check == "diverged":
        return PongJudgement(PongAction.REPLACE, "diverged", None)
    if pending_uncommitted is not None and committed < pending_uncommitted:
        return PongJudgement(PongAction.REPLACE, "uncommitted", None)
    held = max(applied, newest_held)
    pending = held if held > committed and held > trusted_up_to else None
    if committed > applied:
        return PongJudgement(PongAction.DELTA, "", pending)
    return PongJudgement(PongAction.CONFIRM, "", pending)


def keepalive_interval(report_interval_s: float, override_s: float | None, cap_s: float) -> float:
    """How often the node reports: the cluster's report interval, or the node's own
    setting where that is shorter, never above ``cap_s`` (API Gateway closes a WebSocket
    idle for 10 minutes)."""
    interval = report_interval_s if override_s is None else min(report_interval_s, override_s)
    return min(interval, cap_s)
