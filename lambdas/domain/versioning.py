"""Policy-version rules (see ``seg_contract.models`` for the theory of operation).

Entries are stored per (cluster, key) with the version that wrote them; a write only
lands when its version is greater than the stored one (newest wins), so replays and
out-of-order writers cannot move an entry back in time. A delta since N is exact unless
entries were purged after N (the cluster's purge watermark), or N is a version the
cluster never reached (the caller's view belongs to another history)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeltaVerdict(StrEnum):
    AVAILABLE = "available"
    PURGED = "purged"  # since < watermark: take the full snapshot
    AHEAD = "ahead"  # since > current version: take the full snapshot


@dataclass(frozen=True)
class DeltaCheck:
    verdict: DeltaVerdict
    detail: str = ""


def check_delta(since: int, *, current_version: int, purge_watermark: int) -> DeltaCheck:
    if since < 0:
        raise ValueError("since must be >= 0")
    if since < purge_watermark:
        return DeltaCheck(
            DeltaVerdict.PURGED,
            f"delta since {since} is no longer available; fetch the full snapshot",
        )
    if since > current_version:
        return DeltaCheck(
            DeltaVerdict.AHEAD,
            f"delta since {since} is ahead of the cluster's version {current_version}; "
            "fetch the full snapshot",
        )
    return DeltaCheck(DeltaVerdict.AVAILABLE)


def supersedes(new_version: int, stored_version: int | None) -> bool:
    """Newest wins: a write lands only over an older stored version (or nothing)."""
    return stored_version is None or new_version > stored_version
