"""The reporter folds what it cannot deliver (windows spooled when they end, a checkpoint
in between, everything spooled when delivery resumes), and the spool says when it is
near full or evicting, once per change."""

from __future__ import annotations

import itertools
import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from onprem_gateway.agent.cloud import SendResult
from onprem_gateway.agent.event_buffer import EventBuffer
from onprem_gateway.agent.reporter import Reporter, batches
from onprem_gateway.agent.spool import (
    EVICTING,
    EVICTING_HOLD_S,
    NEAR_FULL_STATE,
    OK,
    Spool,
    encode_record,
    spool_state,
)
from onprem_gateway.core import event_fold
from seg_contract import Access, AccessEvent, AccessEventBatch
from tests.unit.gateway_agent.helpers import NOW, event

T0 = NOW.timestamp()


class Sender:
    def __init__(self, up: bool) -> None:
        self.up = up
        self.sent: list[AccessEventBatch] = []
        self.raw: list[bytes] = []

    async def post_events(self, batch_json: bytes) -> SendResult:
        if not self.up:
            return SendResult.FAILED
        self.raw.append(batch_json)
        self.sent.append(AccessEventBatch.model_validate_json(batch_json))
        return SendResult.DELIVERED

    @property
    def requests(self) -> int:
        return sum(e.count for b in self.sent for e in b.events)


def at(
    n: int, seconds: float, *, user: str = "alice", decision: Access = Access.ALLOW
) -> AccessEvent:
    return event(n, user).model_copy(
        update={"at": NOW + timedelta(seconds=seconds), "decision": decision}
    )


def make(tmp_path: Path, sender: Sender | None, wall: list[float], **kw: object) -> Reporter:
    return Reporter(
        EventBuffer(),
        Spool(tmp_path / "spool", max_bytes=kw.pop("max_bytes", 1 << 20)),  # type: ignore[arg-type]
        sender,
        node_id="n1",
        flush_interval_s=0.01,
        retry_delays=lambda: itertools.repeat(0.0),
        clock=lambda: 0.0,
        wall=lambda: wall[0],
        **kw,  # type: ignore[arg-type]
    )


def spooled(spool: Spool) -> list[AccessEvent]:
    out: list[AccessEvent] = []
    while (batch := spool.peek()) is not None:
        out += AccessEventBatch.model_validate_json(batch.payload).events
        spool.ack(batch)
    return out


def test_online_batches_are_the_same_bytes_as_before() -> None:
    ((body, count),) = list(batches("n1", [event(1)]))
    assert count == 1 and b'"count"' not in body and b'"first_at"' not in body
    folded = event(2).model_copy(update={"count": 5, "first_at": NOW})
    ((body, count),) = list(batches("n1", [event(1), folded]))
    assert count == 6 and b'"count":5' in body


async def test_online_nothing_is_folded(tmp_path: Path) -> None:
    sender = Sender(up=True)
    rep = make(tmp_path, sender, [T0])
    for n in range(20):
        rep.buffer.record(at(n, n))
    await rep.flush_once()
    assert not rep.folding and rep.folded_events == 0
    assert [e.event_id for b in sender.sent for e in b.events] == [f"{n:032x}" for n in range(20)]


async def test_cut_off_it_folds_then_delivers_every_request_when_back(tmp_path: Path) -> None:
    sender = Sender(up=False)
    wall = [T0 + 10]
    rep = make(tmp_path, sender, wall)
    rep.buffer.record(at(0, 0))
    await rep.flush_once()  # spooled as is; the POST fails
    assert not rep.cloud_up and rep.spool.depth_events == 1
    # 3 devices, 40 requests each over 2 minutes, a quarter of them blocks.
    n = 1
    for second in range(0, 120, 3):
        for user in ("alice", "bob", "carol"):
            decision = Access.BLOCK if user == "carol" else Access.ALLOW
            rep.buffer.record(at(n, second + 0.5, user=user, decision=decision))
            n += 1
        wall[0] = T0 + second + 1
        await rep.commit()
    assert rep.folding and rep.folded_events == 120
    # The first minute's blocks are spooled (their window ended); the rest are open.
    assert rep.spool.depth_events + rep.open_events == 121
    assert rep.checkpoint.path.exists() and rep.checkpoint.read()
    assert rep.spool.depth_bytes < 40 * 350  # far less than 121 events as they were
    sender.up = True
    await rep.drain()  # the retry succeeds: the node can deliver again
    assert rep.cloud_up
    rep.buffer.record(at(n, 121))
    await rep.flush_once()  # the open table is spooled, then delivered, then the new event
    assert not rep.folding and rep.open_records == 0 and not rep.checkpoint.path.exists()
    assert sender.requests == 122 and rep.sent_events == 122
    events = [e for b in sender.sent for e in b.events]
    assert len({e.event_id for e in events}) == len(events)
    blocks = [e for e in events if e.decision is Access.BLOCK]
    assert sum(e.count for e in blocks) == 40 and len(blocks) == 2  # one per minute
    assert max(e.at for e in events if e.user == "bob") == NOW + timedelta(seconds=117.5)
    assert events[-1].event_id == f"{n:032x}" and events[-1].count == 1


async def test_air_gapped_it_folds_and_shutdown_spools_the_open_windows(tmp_path: Path) -> None:
    rep = make(tmp_path, None, [T0 + 5])
    for n in range(100):
        rep.buffer.record(at(n, n % 50))
    await rep.commit()
    assert rep.folding and rep.spool.depth_events == 0 and rep.open_events == 100
    assert rep.spool_depth == 100  # what the keepalive reports: folded requests included
    await rep.close(deadline_s=1.0)
    reopened = Spool(tmp_path / "spool", max_bytes=1 << 20)
    assert reopened.depth_events == 100  # counted from the records' "count"
    (record,) = spooled(reopened)
    assert record.count == 100 and record.at == NOW + timedelta(seconds=49)


async def test_a_backlog_beyond_the_threshold_folds_even_with_the_cloud_up(
    tmp_path: Path,
) -> None:
    rep = make(tmp_path, Sender(up=True), [T0], max_bytes=64 * 1024, fold_above=0.01)
    rep.spool.append(b"x" * 1000, 1)  # a backlog of 1.5 % of the spool
    rep.buffer.record(at(1, 0))
    await rep.commit()
    assert rep.folding and rep.open_events == 1
    # Hysteresis: still folding while the backlog is above half the threshold.
    rep._fold_above = 0.02
    await rep.commit()
    assert rep.folding
    rep._fold_above = 0.04
    await rep.commit()
    assert not rep.folding and rep.open_events == 0 and rep.spool.depth_events == 2


async def test_a_restart_spools_the_checkpoint_once(tmp_path: Path) -> None:
    rep = make(tmp_path, None, [T0 + 5], checkpoint_interval_s=0.0)
    for n in range(10):
        rep.buffer.record(at(n, n))
    await rep.commit()
    held = rep.checkpoint.read()
    assert [r.count for r in held] == [10]
    # A crash: the table is gone, the checkpoint is not.
    again = make(tmp_path, None, [T0 + 5])
    assert again.recover() == 1 and not again.checkpoint.path.exists()
    assert again.spool.depth_events == 10
    # A crash after a window was spooled but before the checkpoint was rewritten: the
    # record is in the spool already, so it is not spooled twice.
    again.checkpoint.write([r.model_dump_json().encode() for r in held])
    third = make(tmp_path, None, [T0 + 5])
    assert third.recover() == 0 and third.spool.depth_events == 10


async def test_a_failed_spool_write_while_folding_counts_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = [T0 + 5]
    rep = make(tmp_path, None, wall)
    rep.buffer.record(at(1, 0, decision=Access.BLOCK))
    await rep.commit()
    wall[0] = T0 + 120  # the minute has ended: its record is due

    def broken(batches_: list[tuple[bytes, int]]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rep.spool, "append_many", broken)
    rep.buffer.record(at(2, 100, decision=Access.BLOCK))
    assert await rep.commit() == 0 and rep.spool_failures == 1
    assert rep.open_events == 1 and len(rep.buffer) == 1  # the table as it was
    monkeypatch.undo()
    wall[0] = T0 + 130  # the second minute has ended too
    await rep.commit()
    assert rep.spool.depth_events == 2 and rep.open_events == 0


# --- the drop signal --------------------------------------------------------------------------


def test_spool_state_rules() -> None:
    assert spool_state(0.5, None, 0.0) == OK
    assert spool_state(0.9, None, 0.0) == NEAR_FULL_STATE
    assert spool_state(0.1, 100.0, 100.0 + EVICTING_HOLD_S - 1) == EVICTING
    assert spool_state(0.1, 100.0, 100.0 + EVICTING_HOLD_S) == OK
    assert spool_state(0.87, None, 0.0) == OK
    assert spool_state(0.87, None, 0.0, NEAR_FULL_STATE) == NEAR_FULL_STATE  # hysteresis
    assert spool_state(0.84, None, 0.0, NEAR_FULL_STATE) == OK


def test_near_full_and_evicting_are_logged_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = b'[{"event_id": "x"}]'
    record = len(encode_record(payload))
    spool = Spool(tmp_path, max_bytes=record * 10, segment_bytes=record * 2)
    caplog.set_level(logging.DEBUG, "onprem_gateway.agent.spool")
    states: list[str] = []
    for _ in range(30):
        spool.append(payload, 1)
        states.append(spool._state)
    assert NEAR_FULL_STATE in states and states[-1] == EVICTING and spool.evicted_events > 0
    changes = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "spool_state"]
    assert [(r.fields["from"], r.fields["to"]) for r in changes] == [  # type: ignore[attr-defined]
        (OK, NEAR_FULL_STATE),
        (NEAR_FULL_STATE, EVICTING),
    ]
    assert all(r.levelno == logging.WARNING for r in changes)
    # Cleared once the hold has passed without eviction (and the spool drained).
    while (batch := spool.peek()) is not None:
        spool.ack(batch)
    assert spool.last_evicted_at is not None
    assert spool.state(spool.last_evicted_at + EVICTING_HOLD_S) == OK
    assert spool.state(spool.last_evicted_at + EVICTING_HOLD_S + 1) == OK
    cleared = [r for r in caplog.records if getattr(r, "fields", {}).get("to") == OK]
    assert len(cleared) == 1 and cleared[0].levelno == logging.INFO


async def test_a_commit_outliving_shutdown_spools_nothing_twice_and_loses_nothing(
    tmp_path: Path,
) -> None:
    # Shutdown cancels the committer, whose thread may still be folding (or closing due
    # windows) while close() spools the table.
    for attempt in range(10):
        wall = [T0 + 5]
        rep = make(tmp_path / str(attempt), None, wall)
        for n in range(50):
            rep.buffer.record(at(n, 0, user=f"u{n}", decision=Access.BLOCK))
        await rep.commit()
        wall[0] = T0 + 120  # every window is due
        late = [at(100, 61, decision=Access.BLOCK)]
        racer = threading.Thread(target=rep._fold_in, args=(late,))
        racer.start()
        await rep.close(deadline_s=1.0)
        racer.join()
        spool = Spool(tmp_path / str(attempt) / "spool", max_bytes=1 << 20)
        assert spool.depth_events == 51


async def test_the_checkpoint_serialises_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep = make(tmp_path, None, [T0 + 5], checkpoint_interval_s=0.0)
    for n in range(30):
        rep.buffer.record(at(n, 1, user=f"u{n}"))
    await rep.commit()
    serialised: list[str] = []
    real = event_fold.record

    def counting(aggregate: event_fold.Aggregate) -> AccessEvent:
        serialised.append(aggregate.first.user)
        return real(aggregate)

    monkeypatch.setattr(event_fold, "record", counting)
    rep.buffer.record(at(100, 2, user="u7"))
    await rep.commit()
    assert serialised == ["u7"]
    held = {r.user: r for r in rep.checkpoint.read()}
    assert len(held) == 30 and held["u7"].count == 2


class OldControlPlane(Sender):
    """A control plane from before folded records: it refuses any batch holding one."""

    def __init__(self) -> None:
        super().__init__(up=True)
        self.upgraded = False

    async def post_events(self, batch_json: bytes) -> SendResult:
        batch = AccessEventBatch.model_validate_json(batch_json)
        if not self.upgraded and any(e.count > 1 for e in batch.events):
            return SendResult.REJECTED
        return await super().post_events(batch_json)


async def test_folded_records_refused_by_an_older_control_plane_wait_for_its_upgrade(
    tmp_path: Path,
) -> None:
    folded = at(1, 30).model_copy(update={"count": 7, "first_at": NOW})
    sender = OldControlPlane()
    rep = make(tmp_path, sender, [T0])
    rep.spool.append_many(list(batches("n1", [folded])))
    await rep.drain()
    # Not dropped: kept in the spool, the cloud counted down, the reason known.
    assert rep.folded_refused and not rep.cloud_up and rep.rejected_events == 0
    assert rep.spool.depth_events == 7 and not sender.sent
    sender.upgraded = True
    await rep.drain()
    assert not rep.folded_refused and rep.spool.depth_events == 0 and sender.requests == 7


async def test_a_plain_batch_refused_for_good_is_still_dropped(tmp_path: Path) -> None:
    class Refusing(Sender):
        async def post_events(self, batch_json: bytes) -> SendResult:
            return SendResult.REJECTED

    rep = make(tmp_path, Refusing(up=True), [T0])
    rep.buffer.record(at(1, 1))
    await rep.flush_once()
    assert rep.rejected_events == 1 and not rep.folded_refused and rep.spool.depth_events == 0
