"""Keeping the roster: a snapshot, the journal of changes since, and the tables as the
source of truth. ``roster_index`` says why the roster lives in memory.

Theory of operation
-------------------
Writers journal what they change, never the roster itself:

- the payload reader appends the observations of each batch *before* writing the rows
  (an entry may hold observations that lose to newer rows; the merge is newest-wins, so
  that is harmless, and a crash after the journal write cannot lose one);
- the device and override stores (``journaled_stores``) append the email-device keys
  whose MDM facts or override they changed, after every write call: the consumer reads
  those keys' current join, so their order does not matter.

Entries are keyed by the instant of the write and read back with consistent reads, from
``JOURNAL_MARGIN`` before the last read on: a write whose instant was taken before that
read but which landed after it is still seen. The journal keeps entries for
``JOURNAL_TTL``.

The compactor (one scheduled function, every few minutes) folds the journal into a new
snapshot: it loads the published one, replays the journal since its watermark and
publishes the result with watermark "now - ``COMPACT_MARGIN``". With no snapshot yet, or
one older than the journal keeps, it rebuilds from the tables instead (every row and its
join: a full read, the only one, and never on a console request) and starts a new epoch.

A warm API function (``RosterCache``) loads the published snapshot once, then before
answering replays the journal since its last read (at most every ``refresh_s``): the cost
of a request is the changes since the previous one, not the tenant's size. It reloads
when the epoch changes (a rebuild may hold what no journal entry carried) or when it
slept longer than the journal keeps. Without any snapshot (a new deployment, before the
first compaction) it builds from the tables itself.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lambdas.domain.email_view import AccessObservation
from lambdas.domain.errors import StorageError
from lambdas.domain.timefmt import format_instant, parse_instant
from lambdas.ports import (
    EmailDeviceView,
    JournalEntry,
    RosterJournal,
    RosterSnapshots,
    SnapshotHead,
)
from lambdas.usecases.roster_codec import (
    Snapshot,
    decode_keys,
    decode_observations,
    decode_snapshot,
    encode_keys,
    encode_observations,
    encode_snapshot,
)
from lambdas.usecases.roster_index import RosterIndex

logger = logging.getLogger(__name__)

JOURNAL_TTL = timedelta(hours=1)
JOURNAL_MARGIN = timedelta(seconds=10)
COMPACT_MARGIN = timedelta(minutes=2)
DEFAULT_REFRESH_S = 1.0
OBSERVATIONS = "obs"
KEYS = "keys"
_JOIN_BATCH = 500


def new_epoch() -> str:
    return secrets.token_hex(6)


# --- writers -------------------------------------------------------------------------


def journal_observations(journal: RosterJournal, observations: Sequence[AccessObservation]) -> None:
    if observations:
        journal.append(OBSERVATIONS, encode_observations(observations))


def journal_keys(journal: RosterJournal, keys: Iterable[str]) -> None:
    wanted = sorted({k for k in keys if k})
    if wanted:
        journal.append(KEYS, encode_keys(wanted))


# --- consumers -----------------------------------------------------------------------


def refresh_joins(index: RosterIndex, keys: Iterable[str], view: EmailDeviceView) -> None:
    """Read the current MDM facts and override of these email devices into the index."""
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), _JOIN_BATCH):
        chunk = wanted[start : start + _JOIN_BATCH]
        joined = view.join(chunk)
        if joined is None:
            return  # a view without the MDM and override tables: rows stay unjoined
        for key in chunk:
            index.set_facts(key, joined.devices.get(key))
            override = joined.overrides.get(key)
            index.set_override(
                key, override.action.value if override is not None and override.effective else None
            )


def replay(index: RosterIndex, entries: Iterable[JournalEntry], view: EmailDeviceView) -> int:
    """Apply journal entries; returns how many observations changed a row."""
    dirty: set[str] = set()
    changed = 0
    for entry in entries:
        if entry.kind == OBSERVATIONS:
            for obs in decode_observations(entry.data):
                first_row = not index.slots_of_device(obs.email_device_key)
                if index.apply_observation(obs):
                    changed += 1
                    if first_row and not index.has_device(obs.email_device_key):
                        dirty.add(obs.email_device_key)
        elif entry.kind == KEYS:
            dirty.update(decode_keys(entry.data))
        else:
            logger.warning("skipping a roster journal entry of unknown kind %s", entry.kind)
    refresh_joins(index, dirty, view)
    return changed


def rebuild(view: EmailDeviceView) -> RosterIndex:
    """Every row of the view and its join: the full read the journal otherwise avoids."""
    index = RosterIndex()
    for obs in view.all_rows():
        index.apply_observation(obs)
    refresh_joins(index, list(index.device_keys()), view)
    return index


def load_published(snapshots: RosterSnapshots) -> tuple[SnapshotHead, Snapshot] | None:
    """The published snapshot (read again when a compaction replaced it meanwhile)."""
    for _ in range(3):
        head = snapshots.head()
        if head is None:
            return None
        data = snapshots.read(head)
        if data is not None:
            return head, decode_snapshot(data)
    raise StorageError("roster snapshot keeps changing while read; try again")


# --- the compactor -------------------------------------------------------------------


@dataclass(frozen=True)
class Compaction:
    head: SnapshotHead
    rebuilt: bool
    replayed: int  # journal entries folded in


@dataclass(frozen=True)
class Folded:
    index: RosterIndex
    epoch: str  # the published snapshot's, or a new one after a rebuild
    rebuilt: bool
    replayed: int


def fold(
    *,
    snapshots: RosterSnapshots,
    journal: RosterJournal,
    view: EmailDeviceView,
    force_rebuild: bool = False,
) -> Folded:
    """The roster now: the published snapshot and the journal since, or (with no
    snapshot, or one older than the journal keeps) a rebuild from the tables."""
    now = journal.now()
    published = None if force_rebuild else load_published(snapshots)
    fresh = (
        published is not None
        and parse_instant(published[1].watermark) - JOURNAL_MARGIN > now - JOURNAL_TTL
    )
    if published is not None and fresh:
        head, snapshot = published
        index = RosterIndex()
        snapshot.load_into(index)
        entries = journal.read_since(parse_instant(snapshot.watermark) - JOURNAL_MARGIN)
        replay(index, entries, view)
        return Folded(index, head.epoch, rebuilt=False, replayed=len(entries))
    if published is not None:
        logger.warning(
            "roster snapshot of %s is older than the journal keeps: rebuilding",
            published[1].watermark,
        )
    index = rebuild(view)
    # Changes journalled while the rebuild read the tables.
    entries = journal.read_since(now - COMPACT_MARGIN)
    replay(index, entries, view)
    return Folded(index, new_epoch(), rebuilt=True, replayed=len(entries))


def compact(
    *,
    snapshots: RosterSnapshots,
    journal: RosterJournal,
    view: EmailDeviceView,
    force_rebuild: bool = False,
) -> Compaction:
    """Publish a snapshot of the roster as of the journal's clock now."""
    now = journal.now()
    folded = fold(snapshots=snapshots, journal=journal, view=view, force_rebuild=force_rebuild)
    watermark = format_instant(now - COMPACT_MARGIN)
    data = encode_snapshot(Snapshot.of(folded.index, watermark))
    head = snapshots.publish(
        data, epoch=folded.epoch, watermark=watermark, rows=len(folded.index), now=now
    )
    logger.info(
        "roster snapshot published: rows=%d bytes=%d entries=%d rebuilt=%s",
        len(folded.index),
        len(data),
        folded.replayed,
        folded.rebuilt,
    )
    return Compaction(head=head, rebuilt=folded.rebuilt, replayed=folded.replayed)


def publish_index(
    snapshots: RosterSnapshots, index: RosterIndex, *, watermark: datetime, now: datetime
) -> SnapshotHead:
    """Publish ``index`` as a new epoch (tools and tests that build a roster directly);
    consumers replay the journal from ``watermark`` on."""
    stamp = format_instant(watermark)
    data = encode_snapshot(Snapshot.of(index, stamp))
    return snapshots.publish(data, epoch=new_epoch(), watermark=stamp, rows=len(index), now=now)


# --- a warm function's copy ----------------------------------------------------------


@dataclass
class _State:
    index: RosterIndex
    epoch: str
    read_upto: datetime  # the journal is applied up to here
    applied: dict[str, datetime] = field(default_factory=dict)  # entries within the margin


class RosterCache:
    """The roster of one warm API function, brought up to date at most every
    ``refresh_s`` seconds (monotonic clock) before it is used. Its journal reads go by
    the journal's clock."""

    def __init__(
        self,
        *,
        snapshots: RosterSnapshots,
        journal: RosterJournal,
        view: EmailDeviceView,
        refresh_s: float = DEFAULT_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshots = snapshots
        self._journal = journal
        self._view = view
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._state: _State | None = None
        self._refreshed_at = float("-inf")
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        """Held while the roster is read, so a refresh never runs under a query."""
        return self._lock

    def current(self) -> RosterIndex:
        """The roster, refreshed first when ``refresh_s`` has passed."""
        with self._lock:
            if self._state is None or self._monotonic() - self._refreshed_at >= self._refresh_s:
                self._refresh(self._journal.now())
                self._refreshed_at = self._monotonic()
            assert self._state is not None
            return self._state.index

    def _load(self, now: datetime) -> _State:
        published = load_published(self._snapshots)
        if published is None:
            logger.info("no roster snapshot yet: building the roster from the tables")
            return _State(rebuild(self._view), epoch="", read_upto=now - JOURNAL_MARGIN)
        head, snapshot = published
        index = RosterIndex()
        snapshot.load_into(index)
        return _State(index, epoch=head.epoch, read_upto=parse_instant(snapshot.watermark))

    def _refresh(self, now: datetime) -> None:
        state = self._state
        if state is None or now - state.read_upto > JOURNAL_TTL - JOURNAL_MARGIN:
            state = self._state = self._load(now)
        else:
            head = self._snapshots.head()
            if head is not None and head.epoch != state.epoch:
                state = self._state = self._load(now)
        since = state.read_upto - JOURNAL_MARGIN
        entries = [e for e in self._journal.read_since(since) if e.seq not in state.applied]
        replay(state.index, entries, self._view)
        for entry in entries:
            state.applied[entry.seq] = now
        horizon = now - 2 * JOURNAL_MARGIN
        state.applied = {seq: at for seq, at in state.applied.items() if at >= horizon}
        state.read_upto = now
