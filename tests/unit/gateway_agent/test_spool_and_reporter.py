"""The spool's segment format and bounds, and the reporter's delivery rules."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from onprem_gateway.agent.cloud import SendResult
from onprem_gateway.agent.reporter import BATCH_SIZE, EventBuffer, Reporter, batches
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
    spool.ack()
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    got = []
    while (payload := reopened.peek()) is not None:
        got.append(payload)
        reopened.ack()
    # What was acknowledged in a closed segment may come again (idempotent by event id);
    # nothing is lost and the order holds.
    assert got[-4:] == [f'[{{"event_id": "{n}"}}]'.encode() for n in range(1, 5)]
    assert first == b'[{"event_id": "0"}]'
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
    assert reopened.peek() == b'{"event_id": 1}'


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
