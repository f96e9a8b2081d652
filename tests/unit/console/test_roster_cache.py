"""A warm function's roster (``RosterCache``) with in-memory ports: it replays the
journal since its last read (each entry once, even when read again within the margin),
reloads when a new epoch is published or when it slept longer than the journal keeps,
and builds from the tables when nothing was ever published."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lambdas.domain.email_view import AccessObservation, email_device_key
from lambdas.domain.timefmt import format_instant
from lambdas.ports import JournalEntry, MdmFacts, SnapshotHead, ViewJoin
from lambdas.usecases.roster import (
    JOURNAL_TTL,
    RosterCache,
    journal_keys,
    journal_observations,
    publish_index,
)
from lambdas.usecases.roster_index import RosterIndex

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Journal:
    clock: Clock
    entries: list[JournalEntry] = field(default_factory=list)

    def now(self) -> datetime:
        return self.clock.now

    def append(self, kind: str, data: bytes) -> None:
        seq = f"{format_instant(self.clock.now)}#{len(self.entries):06d}"
        self.entries.append(JournalEntry(seq, kind, data))

    def read_since(self, since: datetime) -> list[JournalEntry]:
        return [e for e in self.entries if e.seq >= format_instant(since)]


@dataclass
class Snapshots:
    published: tuple[SnapshotHead, bytes] | None = None

    def head(self) -> SnapshotHead | None:
        return self.published[0] if self.published else None

    def read(self, head: SnapshotHead) -> bytes | None:
        return self.published[1] if self.published and self.published[0] == head else None

    def publish(
        self, data: bytes, *, epoch: str, watermark: str, rows: int, now: datetime
    ) -> SnapshotHead:
        head = SnapshotHead(str(now), epoch, watermark, 1, rows, format_instant(now))
        self.published = (head, data)
        return head


@dataclass
class View:
    rows: list[AccessObservation] = field(default_factory=list)
    facts: dict[str, MdmFacts] = field(default_factory=dict)
    joins: list[list[str]] = field(default_factory=list)

    def all_rows(self) -> list[AccessObservation]:
        return list(self.rows)

    def join(self, keys: list[str]) -> ViewJoin:
        self.joins.append(list(keys))
        return ViewJoin({k: f for k, f in self.facts.items() if k in keys}, {})


def obs(user: str, at: datetime, state: str = "allow") -> AccessObservation:
    return AccessObservation(
        email_device_key=email_device_key(user, "dev"),
        user=user,
        device_id="dev",
        device_type="iPhone",
        user_agent="",
        last_seen=format_instant(at),
        event_id=f"{user}-{at.timestamp()}",
        last_command="Sync",
        access_state=state,
        reason="",
        rule="entry",
        enforced=True,
        protocol_version="16.1",
        last_node="n1",
        cluster_id="c-a",
    )


def facts(model: str) -> MdmFacts:
    return MdmFacts("m-1", model, "iOS", "18", "enrolled", "compliant")


def setup() -> tuple[Clock, Journal, Snapshots, View, RosterCache]:
    clock = Clock()
    journal, snapshots, view = Journal(clock), Snapshots(), View()
    cache = RosterCache(snapshots=snapshots, journal=journal, view=view, refresh_s=0)
    return clock, journal, snapshots, view, cache


def test_without_a_snapshot_it_builds_from_the_tables_then_follows_the_journal() -> None:
    clock, journal, _, view, cache = setup()
    view.rows = [obs("alice", T0)]
    assert len(cache.current()) == 1
    clock.now += timedelta(seconds=2)
    journal_observations(journal, [obs("bob", clock.now, "block")])
    index = cache.current()
    assert sorted(index.columns["user"]) == ["alice", "bob"]


def test_a_keys_entry_is_applied_once_although_read_again_within_the_margin() -> None:
    clock, journal, _, view, cache = setup()
    view.rows = [obs("alice", T0)]
    cache.current()
    key = email_device_key("alice", "dev")
    view.facts[key] = facts("iPhone 15")
    journal_keys(journal, [key])
    before = len(view.joins)
    for step in range(5):  # refreshes 1 s apart: the entry stays inside the 10 s margin
        clock.now += timedelta(seconds=1)
        index = cache.current()
        assert index.row(0)["model"] == "iPhone 15", step
    assert len(view.joins) == before + 1


def test_a_new_epoch_is_loaded_and_a_long_sleep_reloads() -> None:
    clock, journal, snapshots, view, cache = setup()
    view.rows = [obs("alice", T0)]
    cache.current()
    seeded = RosterIndex()
    for i in range(3):
        seeded.apply_observation(obs(f"fleet{i}", T0 - timedelta(days=i)))
    publish_index(snapshots, seeded, watermark=clock.now, now=clock.now)
    clock.now += timedelta(seconds=1)
    assert sorted(cache.current().columns["user"]) == ["fleet0", "fleet1", "fleet2"]
    # Asleep for longer than the journal keeps: the snapshot again, then what follows.
    clock.now += JOURNAL_TTL + timedelta(minutes=1)
    journal_observations(journal, [obs("late", clock.now)])
    assert "late" in cache.current().columns["user"]


def test_refresh_waits_for_its_interval() -> None:
    clock, journal, snapshots, view, _ = setup()
    ticks = [0.0]
    cache = RosterCache(
        snapshots=snapshots, journal=journal, view=view, refresh_s=1.0, monotonic=lambda: ticks[0]
    )
    cache.current()
    journal_observations(journal, [obs("bob", clock.now)])
    ticks[0] = 0.5
    assert len(cache.current()) == 0  # within the interval: the copy as it was
    ticks[0] = 1.0
    assert len(cache.current()) == 1
