"""Which delta a node may have (see ``seg_contract.models`` for the theory of operation
and ``lambdas.usecases.policy_versions`` for the log it is read from).

A delta since N holds the current entry of every key a version in (N, W] changed, W
being the cluster's committed version, and says ``version = W``. It is built from the
cluster's policy log, so it is exact only while the log holds a record of every version
in (N, W]; records expire (TTL) after ``LOG_RETENTION``, and a node that far behind
takes the snapshot. So does one more than ``MAX_DELTA_SPAN`` versions behind: by then the
snapshot costs less than reading the log. A node may legitimately be *ahead* of W (it
applied the pushes of versions committed after W was last moved): its delta is empty.
A ``since`` above the last version handed out belongs to another history (a node
pointed at a re-created cluster): snapshot."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# A delta spans at most this many versions (reading 10,000 log records costs about what
# a snapshot of a mid-sized tenant does).
MAX_DELTA_SPAN = 10_000

_SNAPSHOT = "fetch the full snapshot"


class DeltaVerdict(StrEnum):
    CHANGES = "changes"  # read the log (since, W]
    CURRENT = "current"  # since >= W: nothing to send, the node keeps its version
    AHEAD = "ahead"  # since > the last version handed out: snapshot
    TOO_FAR = "too_far"  # W - since > MAX_DELTA_SPAN: snapshot
    EXPIRED = "expired"  # the log no longer covers (since, W]: snapshot


@dataclass(frozen=True)
class DeltaCheck:
    verdict: DeltaVerdict
    detail: str = ""

    @property
    def available(self) -> bool:
        return self.verdict in (DeltaVerdict.CHANGES, DeltaVerdict.CURRENT)


def check_delta(since: int, *, committed: int, counter: int) -> DeltaCheck:
    """Before reading the log: ``committed`` is W, ``counter`` the last version handed
    out."""
    if since < 0:
        raise ValueError("since must be >= 0")
    if since > counter:
        return DeltaCheck(
            DeltaVerdict.AHEAD,
            f"delta since {since} is ahead of the cluster's version {committed}; {_SNAPSHOT}",
        )
    if since >= committed:
        return DeltaCheck(DeltaVerdict.CURRENT)
    if committed - since > MAX_DELTA_SPAN:
        return DeltaCheck(
            DeltaVerdict.TOO_FAR,
            f"delta since {since} spans more than {MAX_DELTA_SPAN} versions; {_SNAPSHOT}",
        )
    return DeltaCheck(DeltaVerdict.CHANGES)


def check_coverage(since: int, committed: int, versions: Iterable[int]) -> DeltaCheck:
    """After reading the log: every version in (since, committed] must have a record."""
    if set(range(since + 1, committed + 1)) - set(versions):
        return DeltaCheck(
            DeltaVerdict.EXPIRED,
            f"delta since {since} is no longer available; {_SNAPSHOT}",
        )
    return DeltaCheck(DeltaVerdict.CHANGES)
