"""A whole policy reaches a worker in parts (``snapshot_parts``) through the agent's
outbox (``policy_outbox``): the worker keeps deciding with the policy it holds while it
assembles the new one, swaps it in whole on the commit, applies later changes after it,
and refuses a malformed part, keeping its policy until the agent sends it again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

from onprem_gateway.agent import policy_outbox, turns
from onprem_gateway.agent.channel import MAX_LINE, read_message
from onprem_gateway.agent.policy_outbox import PolicyOutbox
from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore
from onprem_gateway.agent.snapshot_parts import (
    PART_ENTRIES,
    Assembly,
    ReplacementError,
    replacement_lines,
)
from onprem_gateway.agent.worker_pool import WorkerPool
from onprem_gateway.agent.worker_process import REPLACEMENT_DUTY_PAUSE, WorkerProcess
from onprem_gateway.core.layered_map import LayeredMap
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, PolicySnapshot
from tests.unit.gateway_agent.helpers import delta, entry, push, snapshot

DEVICES = 3 * PART_ENTRIES + 7
PARTS = 4  # of devices (no credentials)


def big_snapshot(version: int, access: Access) -> PolicySnapshot:
    devices = tuple(entry(f"user{i}", f"dev{i}", access, version) for i in range(DEVICES))
    return snapshot(version, *devices)


@dataclass(eq=False)  # compared and hashed by identity, as a real stream writer
class Pipe:
    """A worker's control socket in memory: what the agent writes, the worker reads."""

    reader: asyncio.StreamReader = field(
        default_factory=lambda: asyncio.StreamReader(limit=MAX_LINE)
    )
    written: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.reader.feed_data(data)

    def is_closing(self) -> bool:
        return False

    async def drain(self) -> None:
        """Read at once (in memory): nothing to wait for."""


@dataclass
class FakeWorker:
    """What the outbox needs of a worker handle."""

    writer: Pipe | None
    joined: int = 0


class Acks:
    """The worker's messages to the agent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.messages.extend(json.loads(line) for line in data.splitlines())

    def is_closing(self) -> bool:
        return False


def worker_on(pipe: Pipe, index: PolicyIndex) -> tuple[WorkerProcess, Acks]:
    acks = Acks()
    worker = WorkerProcess(0, pipe.reader, acks)  # type: ignore[arg-type]
    worker.store = PolicyStore(index)
    worker.pace = REPLACEMENT_DUTY_PAUSE  # as it serves
    return worker, acks


async def follow(worker: WorkerProcess, messages: int) -> None:
    for _ in range(messages):
        message = await read_message(worker.reader)
        assert message is not None
        await worker.apply(message)


def push_lines(version: int) -> bytes:
    return PolicyOp("push", push(entry("user1", "dev1", Access.BLOCK, version)), None).to_lines()


def messages_of(lines: list[bytes]) -> int:
    return sum(1 for chunk in lines for line in chunk.splitlines() if b'"op"' in line)


def assemble(messages: list[bytes]) -> PolicyIndex:
    """The index a worker's ``Assembly`` makes of these messages."""
    assembly: Assembly | None = None
    for message in messages:
        header_line, _, body = message.partition(b"\n")
        header = json.loads(header_line)
        if header["op"] == "begin":
            assembly = Assembly.begin(header, body)
            continue
        assert assembly is not None
        if header["op"] == "part":
            assembly.add(header["seq"], body)
        else:
            return assembly.commit(header["parts"])
    raise AssertionError("no commit")


def test_a_replacement_carries_the_agent_index_exactly() -> None:
    store = PolicyStore()
    store.apply_snapshot(big_snapshot(2, Access.ALLOW), 5.0)
    store.apply_push(push(entry("user1", "dev1", Access.BLOCK, 4)))  # 3 missing: ahead
    agent = store.current()
    messages = list(replacement_lines(agent))
    assert max(len(m) for m in messages) < 200_000  # bounded, whatever the policy's size
    built = assemble(messages)
    assert (built.version, built.ahead, built.confirmed_at) == (2, frozenset({4}), 5.0)
    assert built.generated_at == agent.generated_at
    assert built.to_snapshot() == agent.to_snapshot() and built.digest() == agent.digest()


async def test_the_worker_decides_with_the_old_policy_until_the_commit_then_switches() -> None:
    old = PolicyIndex.from_snapshot(big_snapshot(2, Access.ALLOW), 1.0)
    new = PolicyIndex.from_snapshot(big_snapshot(3, Access.BLOCK), 2.0)
    pipe = Pipe()
    worker, acks = worker_on(pipe, old)
    for message in replacement_lines(new):
        pipe.write(message)
    seen: list[tuple[int, Access | None]] = []
    done = asyncio.Event()

    async def requests() -> None:  # a request each event-loop turn
        while not done.is_set():
            policy = worker.store.current()
            device = policy.entry("user3007", "dev3007") or policy.entry("user5", "dev5")
            seen.append((policy.version, device.access if device else None))
            await asyncio.sleep(0)

    probe = asyncio.create_task(requests())
    await follow(worker, messages_of(pipe.written))
    done.set()
    await probe
    # Served between the parts, with the whole old policy, then with the whole new one.
    assert set(seen) == {(2, Access.ALLOW), (3, Access.BLOCK)}
    switch = seen.index((3, Access.BLOCK))
    assert switch >= 5 and all(s == (2, Access.ALLOW) for s in seen[:switch])
    assert all(s == (3, Access.BLOCK) for s in seen[switch:])
    assert worker.store.current().to_snapshot() == new.to_snapshot()
    assert acks.messages == [{"op": "applied", "version": 3}]  # once, after the swap


def ops_of(pipe: Pipe) -> list[str]:
    return [
        json.loads(line)["op"]
        for chunk in pipe.written
        for line in chunk.splitlines()
        if line.startswith(b'{"op"')
    ]


async def written(pipe: Pipe, messages: int) -> None:
    for _ in range(200):
        if messages_of(pipe.written) >= messages:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{messages_of(pipe.written)} of {messages} messages written")


@asynccontextmanager
async def replacing() -> AsyncIterator[tuple[PolicyStore, Pipe, WorkerProcess, Acks, PolicyOutbox]]:
    """An agent that replaced its policy (version 2 -> 5) and is writing the new one to
    a worker through its outbox: the first part or two are written."""
    agent = PolicyStore()
    agent.apply_snapshot(big_snapshot(2, Access.ALLOW), 1.0)
    pipe = Pipe()
    worker, acks = worker_on(pipe, agent.current())
    outbox = PolicyOutbox(lambda: [FakeWorker(pipe)])
    sender = asyncio.create_task(outbox.run())
    try:
        replaced = agent.replace_with_snapshot(big_snapshot(5, Access.ALLOW), 2.0)
        outbox.post(replacement_lines(replaced))
        await asyncio.sleep(0)
        yield agent, pipe, worker, acks, outbox
    finally:
        sender.cancel()


async def test_a_delta_posted_during_a_replacement_reaches_the_worker_after_it() -> None:
    async with replacing() as (agent, pipe, worker, acks, outbox):
        change = delta(5, 6, entry("user1", "dev1", Access.BLOCK, 6))
        agent.apply_delta(change, 3.0)
        outbox.post(PolicyOp("delta", change, 3.0).to_lines())  # as the pool posts it
        outbox.post(push_lines(7), push=True)  # a push behind it keeps its place
        await written(pipe, PARTS + 4)  # begin, the parts, commit, the delta, the push
        ops = ops_of(pipe)
        assert ops[-3:] == ["commit", "delta", "push"] and ops.count("delta") == 1
        await follow(worker, len(ops))
        assert [a["version"] for a in acks.messages] == [5, 6, 7]
        assert worker.store.current().entry("user1", "dev1").access is Access.BLOCK  # type: ignore[union-attr]


async def test_a_push_posted_during_a_replacement_is_in_force_at_once_and_after_the_swap() -> None:
    async with replacing() as (agent, pipe, worker, acks, outbox):
        blocked = entry("user1", "dev1", Access.BLOCK, 6)
        agent.apply_push(push(blocked))
        outbox.post(push_lines(6), push=True)  # what the pool posts for a push
        await written(pipe, PARTS + 3)
        ops = ops_of(pipe)
        # Written between two parts, not after the commit.
        assert ops.index("push") < ops.index("commit") and ops.count("push") == 1
        before_push = ops.index("push")
        await follow(worker, before_push)  # the replacement's first messages
        held = worker.store.current()
        assert held.version == 2 and held.entry("user1", "dev1").access is Access.ALLOW  # type: ignore[union-attr]
        await follow(worker, 1)  # the push: in force at once, on the policy held
        assert worker.store.current().entry("user1", "dev1").access is Access.BLOCK  # type: ignore[union-attr]
        assert acks.messages == []  # acknowledged with the replacement
        await follow(worker, len(ops) - before_push - 1)
        # ... and on the new policy once swapped in: the agent's policy exactly.
        swapped = worker.store.current()
        assert swapped.entry("user1", "dev1").access is Access.BLOCK  # type: ignore[union-attr]
        assert swapped.to_snapshot() == agent.current().to_snapshot()
        assert acks.messages == [{"op": "applied", "version": 6}]


@dataclass(eq=False)
class SlowReader(Pipe):
    """A worker that takes what it is sent only when told to (``drain`` waits)."""

    taken: asyncio.Event = field(default_factory=asyncio.Event)

    async def drain(self) -> None:
        await self.taken.wait()
        self.taken.clear()


async def test_a_replacement_is_written_as_the_workers_read_it_but_not_held_up_by_a_stuck_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy_outbox, "STALLED_AFTER_S", 0.05)
    reading, stuck = SlowReader(), SlowReader()
    outbox = PolicyOutbox(lambda: [FakeWorker(reading), FakeWorker(stuck)])
    sender = asyncio.create_task(outbox.run())
    outbox.post(replacement_lines(PolicyIndex.from_snapshot(big_snapshot(3, Access.BLOCK), 2.0)))
    for _ in range(20):
        await asyncio.sleep(0)
    # One message each until the workers read it: the rest waits in the agent.
    assert messages_of(reading.written) == messages_of(stuck.written) == 1
    reading.taken.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert messages_of(reading.written) == 1  # the other has not read it yet
    # The stuck one is given up on after STALLED_AFTER_S; the reading one sets the pace.
    while messages_of(reading.written) < PARTS + 2:
        reading.taken.set()
        await asyncio.sleep(0.01)
    await written(reading, PARTS + 2)
    assert messages_of(stuck.written) == PARTS + 2  # buffered, as before pacing
    sender.cancel()


async def test_a_malformed_part_is_refused_and_the_worker_keeps_its_policy() -> None:
    old = PolicyIndex.from_snapshot(big_snapshot(2, Access.ALLOW), 1.0)
    new = PolicyIndex.from_snapshot(big_snapshot(3, Access.BLOCK), 2.0)
    messages = list(replacement_lines(new))
    messages[2] = messages[2].replace(b'"version":3', b'"version":0', 1)  # part 1
    pipe = Pipe()
    worker, acks = worker_on(pipe, old)
    for message in messages:
        pipe.write(message)
    pipe.write(push_lines(3))  # an op for the policy the worker no longer follows
    await follow(worker, len(messages) + 1)
    assert worker.store.current() is old
    [refused] = acks.messages
    assert refused["op"] == "refused" and refused["version"] == 2
    assert refused["error"].startswith("replacement part 1 refused: 1 error(s), first at devices.")
    # The agent sends the policy again: the worker takes it and follows again.
    for message in replacement_lines(new):
        pipe.write(message)
    await follow(worker, len(messages))
    assert worker.store.current().to_snapshot() == new.to_snapshot()
    assert acks.messages[-1] == {"op": "applied", "version": 3}


@pytest.mark.parametrize(
    ("drop", "error"),
    [(3, "replacement part 3 where part 2 was due"), (-2, "replacement of 4 parts: 3 arrived")],
)
def test_a_missing_part_fails_the_assembly(drop: int, error: str) -> None:
    new = PolicyIndex.from_snapshot(big_snapshot(3, Access.BLOCK), 2.0)
    messages = list(replacement_lines(new))
    del messages[drop]
    with pytest.raises(ReplacementError, match=error):
        assemble(messages)


async def test_a_worker_started_during_a_replacement_gets_none_of_its_parts() -> None:
    early, late = Pipe(), Pipe()
    workers = [FakeWorker(early, joined=0), FakeWorker(late, joined=1)]
    outbox = PolicyOutbox(lambda: workers)
    outbox.post(b"first\n")  # seq 0: before the late worker joined
    outbox.post(b"second\n")  # seq 1
    assert early.written == [b"first\n", b"second\n"] and late.written == [b"second\n"]


@dataclass
class FakeProcess:
    returncode: int | None = None
    killed: bool = False

    def kill(self) -> None:
        self.killed = True


async def test_the_agent_sends_a_refused_replacement_again_then_restarts_the_worker() -> None:
    store = PolicyStore()
    store.apply_snapshot(big_snapshot(2, Access.ALLOW), 1.0)
    pool = WorkerPool(None, store, None, 1)  # type: ignore[arg-type]  # no process started
    sender = asyncio.create_task(pool._outbox.run())
    pipe, process = Pipe(), FakeProcess()
    handle = pool._workers[0]
    handle.writer, handle.process = pipe, process  # type: ignore[assignment]
    pool._on_message(handle, {"op": "refused", "version": 1, "error": "part 3: bad"})
    for _ in range(100):
        if b'"op":"commit"' in b"".join(pipe.written):
            break
        await asyncio.sleep(0)
    worker, acks = worker_on(pipe, PolicyIndex.empty())
    await follow(worker, messages_of(pipe.written))
    assert acks.messages == [{"op": "applied", "version": 2}]
    assert worker.store.current().to_snapshot() == store.current().to_snapshot()
    assert not process.killed
    pool._on_message(handle, {"op": "refused", "version": 1, "error": "part 3: bad"})
    assert process.killed  # it restarts and gets the policy as a new worker
    sender.cancel()


@dataclass
class ChannelReading:
    """The worker's channel transport, as far as pausing it goes."""

    reading: bool = True
    pauses: int = 0

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False


async def test_a_serving_worker_rests_unread_and_freezes_each_part_as_folded() -> None:
    old = PolicyIndex.from_snapshot(big_snapshot(2, Access.ALLOW), 1.0)
    new = PolicyIndex.from_snapshot(big_snapshot(3, Access.BLOCK), 2.0)
    pipe = Pipe()
    worker, acks = worker_on(pipe, old)
    worker.reading = reading = ChannelReading()
    adopted: list[int] = []
    worker.adopt = lambda: adopted.append(worker.assembly._next if worker.assembly else -1)
    seen_paused: list[bool] = []
    done = asyncio.Event()

    async def watch() -> None:  # what a request served meanwhile would see
        while not done.is_set():
            seen_paused.append(not reading.reading)
            await asyncio.sleep(0)

    for message in replacement_lines(new):
        pipe.write(message)
    watcher = asyncio.create_task(watch())
    await follow(worker, PARTS + 2)
    done.set()
    await watcher
    # It rested after the begin and after every part, never reading the channel
    # meanwhile, and reads again once the policy is swapped in.
    assert reading.pauses == 1 + PARTS and reading.reading and any(seen_paused)
    assert adopted == list(range(1, PARTS + 1))  # right after each part was folded
    assert acks.messages == [{"op": "applied", "version": 3}]


class Tracked:
    """A policy object whose freeing a test can see (``weakref``)."""


class Table(dict[str, Tracked]):
    """A policy table whose freeing a test can see."""


async def test_a_retired_policy_lets_its_tables_go_first_then_frees_a_slice_per_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turns, "RELEASE_SLICE", 100)
    values = [Tracked() for _ in range(1_000)]
    base = Table((f"key{i}", value) for i, value in enumerate(values))
    objects, table = [weakref.ref(v) for v in values], weakref.ref(base)
    references = LayeredMap(base).references()
    del values, base
    per_turn: list[tuple[bool, int]] = []  # (table freed, objects alive) per event-loop turn
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            per_turn.append((table() is None, sum(o() is not None for o in objects)))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    release = turns.release_gradually(references)
    del references  # the release holds the only reference, as the worker's does
    await release
    done.set()
    await watcher
    assert table() is None and all(o() is None for o in objects)
    # The table went while every object was still held (freeing it cost no object),
    # then the objects went at most a slice per turn.
    assert (True, 1_000) in per_turn
    alive = [n for _, n in per_turn]
    assert max(a - b for a, b in pairwise(alive)) <= 100
    assert alive[-1] == 0


async def test_an_outbox_stopped_while_a_worker_reads_leaves_no_wait_behind() -> None:
    slow = SlowReader()
    outbox = PolicyOutbox(lambda: [FakeWorker(slow)])
    sender = asyncio.create_task(outbox.run())
    outbox.post(replacement_lines(PolicyIndex.from_snapshot(big_snapshot(3, Access.BLOCK), 2.0)))
    await written(slow, 1)
    await asyncio.sleep(0)  # waiting for the worker to read the begin

    def drains() -> list[asyncio.Task[Any]]:
        current = asyncio.all_tasks()
        return [t for t in current if "SlowReader.drain" in repr(t.get_coro()) and not t.done()]

    assert drains()
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    await asyncio.sleep(0)
    assert drains() == []
