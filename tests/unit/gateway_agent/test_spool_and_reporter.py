"""The spool's segment format and bounds, and the reporter's delivery rules."""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from onprem_gateway.agent.cloud import SendResult
from onprem_gateway.agent.event_buffer import BATCH_SIZE, EventBuffer
from onprem_gateway.agent.reporter import Reporter, batches
from onprem_gateway.agent.spool import HEADER, MAGIC, Spool, decode_records, encode_record
from seg_contract import AccessEventBatch
from tests.unit.gateway_agent.helpers import event


def test_record_format_is_magic_length_crc_payload() -> None:
    record = encode_record(b"hello")
    assert record[:2] == MAGIC and len(record) == HEADER.size + 5
    assert decode_records(record + record) == ([(10, 5), (25, 5)], 30)


def test_a_torn_tail_is_cut_at_the_last_good_record() -> None:
    data = encode_record(b"one") + encode_record(b"two")[:-1]
    assert decode_records(data) == ([(10, 3)], 13)
    flipped = bytearray(encode_record(b"one"))
    flipped[-1] ^= 1
    assert decode_records(bytes(flipped)) == ([], 0)


def test_spool_is_fifo_and_survives_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for n in range(5):
        spool.append(f'[{{"event_id": "{n}"}}]'.encode(), 1)
    assert spool.depth_batches == 5 and spool.depth_events == 5
    assert len(list(tmp_path.glob("*.seg"))) >= 2  # small segments roll over
    first = spool.peek()
    assert first is not None and spool.ack(first)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    got = []
    while (batch := reopened.peek()) is not None:
        got.append(batch.payload)
        reopened.ack(batch)
    # What was acknowledged in a closed segment may come again (idempotent by event id);
    # nothing is lost and the order holds.
    assert got[-4:] == [f'[{{"event_id": "{n}"}}]'.encode() for n in range(1, 5)]
    assert first.payload == b'[{"event_id": "0"}]'
    assert not reopened and not list(tmp_path.glob("*.seg"))


def test_a_damaged_segment_is_truncated_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b'{"event_id": 1}', 1)
    spool.append(b'{"event_id": 2}', 1)
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-4])  # a crash mid-write
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert reopened.damaged_segments == 1 and reopened.depth_batches == 1
    batch = reopened.peek()
    assert batch is not None and batch.payload == b'{"event_id": 1}'


def test_full_spool_evicts_oldest_segments_and_counts_the_events(tmp_path: Path) -> None:
    payload = b'[{"event_id": "x"}, {"event_id": "y"}]'  # 2 events, 38 bytes
    record = len(encode_record(payload))
    spool = Spool(tmp_path, max_bytes=record * 4, segment_bytes=record * 2)
    for _ in range(10):
        spool.append(payload, 2)
    assert spool.depth_bytes <= record * 4
    assert spool.evicted_events == 2 * (10 - spool.depth_batches)
    assert spool.evicted_batches == 10 - spool.depth_batches


class FakeSender:
    def __init__(self, results: Iterator[SendResult]) -> None:
        self.results = results
        self.sent: list[AccessEventBatch] = []

    async def post_events(self, batch_json: bytes) -> SendResult:
        result = next(self.results)
        if result is SendResult.DELIVERED:
            self.sent.append(AccessEventBatch.model_validate_json(batch_json))
        return result


def reporter(tmp_path: Path, sender: FakeSender | None, clock: list[float]) -> Reporter:
    return Reporter(
        EventBuffer(),
        Spool(tmp_path, max_bytes=1 << 20),
        sender,
        node_id="n1",
        flush_interval_s=0.01,
        retry_delays=lambda: itertools.repeat(5.0),
        clock=lambda: clock[0],
    )


def ids(batches_: list[AccessEventBatch]) -> list[str]:
    return [e.event_id for b in batches_ for e in b.events]


async def test_buffer_is_cut_into_batches_of_at_most_500(tmp_path: Path) -> None:
    sender = FakeSender(itertools.repeat(SendResult.DELIVERED))
    rep = reporter(tmp_path, sender, [0.0])
    for n in range(1203):
        rep.buffer.record(event(n))
    await rep.flush_once()
    assert [len(b.events) for b in sender.sent] == [500, 500, 203]
    assert rep.sent_events == 1203 and not rep.spool


async def test_failed_post_spools_keeps_order_and_drains_after_the_backoff(tmp_path: Path) -> None:
    clock = [0.0]
    sender = FakeSender(iter([SendResult.FAILED] + [SendResult.DELIVERED] * 10))
    rep = reporter(tmp_path, sender, clock)
    rep.buffer.record(event(1))
    await rep.flush_once()  # fails: spooled
    rep.buffer.record(event(2))
    await rep.flush_once()  # spool not empty: spooled behind it, no attempt yet
    assert rep.spool.depth_events == 2 and not sender.sent and not rep.cloud_up
    clock[0] = 6.0  # the retry delay has passed
    rep.buffer.record(event(3))
    await rep.flush_once()
    assert ids(sender.sent) == [f"{n:032x}" for n in (1, 2, 3)]
    assert rep.spool.depth_events == 0 and rep.cloud_up


async def test_a_batch_refused_for_good_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    sender = FakeSender(iter([SendResult.REJECTED, SendResult.DELIVERED]))
    rep = reporter(tmp_path, sender, [0.0])
    rep.buffer.record(event(1))
    await rep.flush_once()
    rep.buffer.record(event(2))
    await rep.flush_once()
    assert rep.rejected_events == 1 and ids(sender.sent) == [f"{2:032x}"]


async def test_close_spools_what_cannot_be_delivered(tmp_path: Path) -> None:
    sender = FakeSender(itertools.repeat(SendResult.FAILED))
    rep = reporter(tmp_path, sender, [0.0])
    for n in range(3):
        rep.buffer.record(event(n))
    await rep.close(deadline_s=1.0)
    assert Spool(tmp_path, max_bytes=1 << 20).depth_events == 3


async def test_without_a_control_plane_events_are_kept_in_the_spool(tmp_path: Path) -> None:
    rep = reporter(tmp_path, None, [0.0])
    rep.buffer.record(event(1))
    await rep.flush_once()
    assert rep.spool.depth_events == 1


def test_buffer_is_bounded_and_counts_what_it_drops() -> None:
    buffer = EventBuffer(max_events=10)
    for n in range(25):
        buffer.record(event(n))
    assert len(buffer) == 10 and buffer.dropped == 15
    assert buffer.take_all()[0].event_id == f"{15:032x}"


def test_batches_respect_the_contract() -> None:
    out = list(batches("n1", [event(n) for n in range(BATCH_SIZE + 1)]))
    assert [count for _, count in out] == [BATCH_SIZE, 1]
    assert AccessEventBatch.model_validate_json(out[0][0]).node_id == "n1"


# --- durable first, acknowledged after acceptance -------------------------------------------


class RecordingSender:
    """Checks, at every POST, that the batch is already on disk."""

    def __init__(self, spool_dir: Path, results: Iterator[SendResult]) -> None:
        self.spool_dir = spool_dir
        self.results = results
        self.durable_at_post: list[bool] = []
        self.posted: list[list[str]] = []

    async def post_events(self, batch_json: bytes) -> SendResult:
        data = b"".join(p.read_bytes() for p in sorted(self.spool_dir.glob("*.seg")))
        self.durable_at_post.append(batch_json in data)
        self.posted.append(
            [e.event_id for e in AccessEventBatch.model_validate_json(batch_json).events]
        )
        return next(self.results)


async def test_events_are_on_disk_before_the_post_and_acknowledged_only_after_it(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    sender = RecordingSender(spool_dir, iter([SendResult.FAILED, SendResult.DELIVERED]))
    rep = Reporter(
        EventBuffer(),
        Spool(spool_dir, max_bytes=1 << 20),
        sender,
        node_id="n1",
        flush_interval_s=0.01,
        retry_delays=lambda: itertools.repeat(0.0),
    )
    rep.buffer.record(event(1))
    await rep.commit()
    assert rep.spool.depth_events == 1 and not sender.posted  # durable, nothing sent yet
    await rep.drain()  # the POST fails: the batch stays
    assert rep.spool.depth_events == 1
    await rep.drain()  # accepted: acknowledged
    assert sender.durable_at_post == [True, True]
    assert sender.posted == [[f"{1:032x}"]] * 2  # the same batch, byte for byte
    assert rep.spool.depth_events == 0 and rep.spooled_events == 1


async def test_a_commit_is_one_fsync_however_many_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep = Reporter(
        EventBuffer(),
        Spool(tmp_path, max_bytes=64 << 20),  # segments of 4 MiB: one holds the commit
        FakeSender(itertools.repeat(SendResult.DELIVERED)),  # online: no folding
        node_id="n1",
        flush_interval_s=0.01,
        retry_delays=lambda: itertools.repeat(5.0),
    )
    file_fsyncs: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            file_fsyncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    for n in range(1203):
        rep.buffer.record(event(n))
    assert await rep.commit() == 1203
    assert rep.spool.depth_batches == 3 and len(file_fsyncs) == 1  # group commit


async def test_a_failed_spool_write_keeps_the_events_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep = reporter(tmp_path, FakeSender(itertools.repeat(SendResult.DELIVERED)), [0.0])
    rep.buffer.record(event(1))

    def broken(batches_: list[tuple[bytes, int]]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rep.spool, "append_many", broken)
    assert await rep.commit() == 0
    assert len(rep.buffer) == 1 and rep.spool_failures == 1
    monkeypatch.undo()
    rep.buffer.record(event(2))
    assert await rep.commit() == 2  # in order: the kept event first
    first = rep.spool.peek()
    assert first is not None
    assert [e.event_id for e in AccessEventBatch.model_validate_json(first.payload).events] == [
        f"{1:032x}",
        f"{2:032x}",
    ]


def test_an_ack_names_its_record_so_an_eviction_in_between_cannot_skip_another(
    tmp_path: Path,
) -> None:
    payload = b'[{"event_id": "x"}]'
    record = len(encode_record(payload))
    spool = Spool(tmp_path, max_bytes=record * 2, segment_bytes=record)
    spool.append(b'[{"event_id": "a"}]', 1)
    spool.append(b'[{"event_id": "b"}]', 1)
    in_flight = spool.peek()  # "a" is being sent...
    assert in_flight is not None
    spool.append(b'[{"event_id": "c"}]', 1)  # ... when the full spool evicts it
    assert spool.evicted_events == 1
    assert spool.ack(in_flight) is False  # "b" is not skipped
    nxt = spool.peek()
    assert nxt is not None and nxt.payload == b'[{"event_id": "b"}]'


def test_the_oldest_unsent_age_follows_the_head(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.oldest_unsent_at is None
    spool.append(b'[{"event_id": "a"}]', 1)
    first = spool.oldest_unsent_at
    spool.append(b'[{"event_id": "b"}]', 1)
    assert first is not None and spool.oldest_unsent_at == first
    batch = spool.peek()
    assert batch is not None and spool.ack(batch)
    assert spool.oldest_unsent_at is not None and spool.oldest_unsent_at >= first
    spool.close()
    assert Spool(tmp_path, max_bytes=1 << 20).oldest_unsent_at is not None  # from the file


async def test_the_sender_waits_for_the_retry_time_after_a_failure(tmp_path: Path) -> None:
    clock = [0.0]
    sender = FakeSender(iter([SendResult.FAILED, SendResult.DELIVERED]))
    rep = reporter(tmp_path, sender, clock)
    rep.buffer.record(event(1))
    await rep.flush_once()  # fails; retry in 5 s
    await rep.drain()
    assert not sender.sent and rep.failed_posts == 1  # no second attempt before then
    clock[0] = 5.0
    await rep.drain()
    assert ids(sender.sent) == [f"{1:032x}"] and not rep.spool


def test_a_commit_spanning_segments_fsyncs_each_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folded window of 10,000 devices is one commit of ~4 MB: more than a segment.
    payload = b'[{"event_id": "x"}]'
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=len(encode_record(payload)) * 3)
    synced: list[str] = []
    real = os.fsync

    def tracking(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", tracking)
    spool.append_many([(payload, 1)] * 10)
    segments = sorted(p.name for p in tmp_path.glob("*.seg"))
    assert len(segments) == 4 and sorted(synced) == segments
    assert spool.depth_events == 10
