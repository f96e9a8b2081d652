"""The policy log and the committed watermark, as values (``lambdas.usecases.
policy_versions`` has the protocol and its proof sketch).

Every version a cluster hands out is *settled* exactly once in its policy log: committed
(with the changes it made, as digest terms) or abandoned (its writer died or gave up,
and the version was fenced so that it can never be committed later). The cluster's
committed version W moves forward over settled versions only; ``walk`` is the pure step
that moves it, carrying the policy digest along (``seg_contract.digest``: a sum of
terms, so a change is "minus the old term, plus the new one").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from seg_contract import ClusterSettings
from seg_contract.digest import replace, settings_term

# How long a version may stay unsettled (taken, not yet committed) before an advancer
# fences it as abandoned. Safety never depends on it (the fence and the commit are both
# conditional writes of the one log item: exactly one of them wins, and a fenced writer
# retries under a new version); only liveness does. Too short and a slow but living
# writer is fenced and must redo its work; too long and a dead writer's hole holds every
# node's committed version back. A writer holds a version for at most its Lambda's
# timeout (30 s for the compliance reader, 29 s for the API), so 90 s is three of those:
# no living writer is ever fenced, and a dead one's hole is gone within 90 s plus one
# report interval.
ABANDON_GRACE = timedelta(seconds=90)

# How many recent (version, digest) pairs a cluster keeps, so that a node a few versions
# behind W (it applied pushes one by one and W moved on meanwhile) still gets a verdict.
RECENT_DIGESTS = 32

# A log record outlives any writer of its version by far (TTL): a version is held for
# at most a Lambda timeout, and W never moves back, so an expired record below W is only
# ever missed by a delta (HTTP 410: take the snapshot).
LOG_RETENTION = timedelta(days=30)


class LogState(StrEnum):
    PENDING = "pending"  # noticed missing by an advancer; its writer may still commit
    COMMITTED = "committed"
    ABANDONED = "abandoned"  # fenced: a commit of this version is refused for ever


class ChangeKind(StrEnum):
    DEVICE = "device"
    CREDENTIAL = "credential"
    SETTINGS = "settings"


SETTINGS_KEY = "settings"  # the key of the one settings change a version may make


@dataclass(frozen=True)
class Change:
    """One key a committed version changed: its digest term before (None: the key was
    absent) and after."""

    kind: ChangeKind
    key: str  # entry_key(user, device_id) | user | SETTINGS_KEY
    old_term: int | None
    new_term: int


@dataclass(frozen=True)
class LogRecord:
    version: int
    state: LogState
    changes: tuple[Change, ...] = ()
    first_seen: datetime | None = None  # when an advancer marked it pending

    def changed(self, kind: ChangeKind) -> Iterator[str]:
        return (c.key for c in self.changes if c.kind is kind)


@dataclass(frozen=True)
class Watermark:
    """A cluster's committed version W, the policy digest at W, and the digests of the
    most recent versions up to W (oldest first)."""

    version: int
    digest: int
    recent: tuple[tuple[int, int], ...] = ()

    def digest_at(self, version: int) -> int | None:
        """The digest of the policy at ``version`` (None: not kept, or not yet known)."""
        if version == self.version:
            return self.digest
        return next((d for v, d in self.recent if v == version), None)


def initial_watermark(settings: ClusterSettings) -> Watermark:
    """A new cluster's: version 0, the digest of its settings alone (settings_version 0)."""
    digest = settings_term(settings, 0)
    return Watermark(0, digest, ((0, digest),))


# How many versions past the first unsettled one a walk looks at: it marks the missing
# ones pending and fences the old pending ones there too, so that several writers that
# died together cost one grace, not one grace each. Each version is marked at most once
# (the mark is conditional), so this costs at most one write per version.
LOOKAHEAD = 100


@dataclass(frozen=True)
class WalkPlan:
    """What an advancer must do: fence ``fence`` (pending too long), mark
    ``mark_pending`` (missing, so that their age can be measured), then move W to
    ``watermark``, which is valid only once every fence at or below it has succeeded."""

    watermark: Watermark
    fence: tuple[int, ...] = ()
    mark_pending: tuple[int, ...] = ()

    def moves(self, current: Watermark) -> bool:
        return self.watermark.version > current.version

    @property
    def required_fences(self) -> tuple[int, ...]:
        return tuple(v for v in self.fence if v <= self.watermark.version)


def walk(
    watermark: Watermark,
    counter: int,
    records: Iterable[LogRecord],
    now: datetime,
    grace: timedelta = ABANDON_GRACE,
) -> WalkPlan:
    """Move W over the settled versions after it, up to ``counter`` (the last version
    handed out). ``records`` are the log records of versions in (W, counter], in version
    order; the walk reads no further than ``LOOKAHEAD`` versions past where W stops (so
    the caller can read lazily).

    committed -> apply its changes, go on; abandoned -> go on; pending and older than
    ``grace`` -> fence it (abandoned), go on; pending and younger -> stop; missing ->
    mark it pending, stop. Past the stop, missing versions are marked and old pending
    ones fenced as well, without moving W."""
    version, digest = watermark.version, watermark.digest
    recent = list(watermark.recent)
    fence: list[int] = []
    mark: list[int] = []
    stopped_at: int | None = None
    found = iter(records)
    ahead: LogRecord | None = None  # read, not yet walked
    exhausted = False
    for wanted in range(watermark.version + 1, counter + 1):
        if stopped_at is not None and wanted - stopped_at > LOOKAHEAD:
            break
        while not exhausted and (ahead is None or ahead.version < wanted):  # (strays < W)
            ahead = next(found, None)
            exhausted = ahead is None
        record = ahead if ahead is not None and ahead.version == wanted else None
        if record is not None:
            ahead = None
        if record is None:
            mark.append(wanted)
        elif record.state is LogState.PENDING:
            seen = record.first_seen
            if seen is not None and now - seen >= grace:
                fence.append(wanted)
            else:
                record = None  # unsettled: W stops here
        if stopped_at is not None:
            continue
        if record is None:
            stopped_at = wanted
            continue
        if record.state is LogState.COMMITTED:
            for change in record.changes:
                digest = replace(digest, change.old_term, change.new_term)
        version = wanted
        recent.append((version, digest))
    return WalkPlan(
        Watermark(version, digest, tuple(recent[-RECENT_DIGESTS:])), tuple(fence), tuple(mark)
    )


class DigestVerdict(StrEnum):
    """``seg_contract.PushPong.digest_check``."""

    IN_SYNC = "in_sync"
    DIVERGED = "diverged"
    UNCHECKED = "unchecked"


def check_digest(reported: str, version: int, watermark: Watermark) -> DigestVerdict:
    """Compare a node's reported digest (32 hex, "" for none) of its policy at
    ``version`` with the control plane's digest of that version."""
    if not reported:
        return DigestVerdict.UNCHECKED
    ours = watermark.digest_at(version)
    if ours is None:
        return DigestVerdict.UNCHECKED
    return DigestVerdict.IN_SYNC if int(reported, 16) == ours else DigestVerdict.DIVERGED
