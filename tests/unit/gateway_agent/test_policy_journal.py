"""The journal of signed input (the last-known-good policy): what it keeps, how a node
replays it at start, and what it refuses; and an operator's policy file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from onprem_gateway.agent import policy_journal
from onprem_gateway.agent.persist import JournalFile, decode_records
from onprem_gateway.agent.policy_journal import (
    MAX_CONFIRMS,
    PolicyFileError,
    PolicyJournal,
    load_policy_file,
)
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_trust import PolicyTrust
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, PushChange
from seg_contract.signing import (
    Kind,
    LocalSigner,
    SignedPayload,
    b64url,
    decode_record,
    encode_record,
    unb64url,
)
from tests.unit.gateway_agent.helpers import (
    delta,
    entry,
    push,
    sign,
    signed_confirm,
    signed_delta,
    signed_snapshot,
    snapshot,
    trust,
)

T = 10_000.0  # the tests' "now" (epoch seconds)


def node_trust(cluster: str = "c1") -> PolicyTrust:
    return trust(lambda: T, cluster=cluster)


def signed_change(message: PushChange, at: float) -> SignedPayload:
    return sign(Kind.CHANGE, message.version, message.model_dump_json().encode(), at)


class Node:
    """A store with its journal, fed as the agent feeds it (verified input)."""

    def __init__(self, state_dir: Path) -> None:
        self.journal = PolicyJournal(JournalFile(state_dir), min_interval_s=0)
        self.store = PolicyStore()
        self.journal.attach(self.store)

    def take_snapshot(self, version: int, at: float, *entries: object) -> None:
        snap = snapshot(version, *entries)  # type: ignore[arg-type]
        self.store.apply_snapshot(snap, at, signed_snapshot(snap, at))

    def take_push(self, message: PushChange, at: float) -> None:
        self.store.apply_push(message, signed=signed_change(message, at))

    def take_confirm(self, version: int, at: float) -> None:
        self.store.confirm(at, signed_confirm(version, at))

    async def flush(self) -> None:
        await self.journal.flush()


def restart(state_dir: Path, cluster: str = "c1") -> tuple[PolicyIndex, PolicyJournal, PolicyTrust]:
    t = node_trust(cluster)
    journal = PolicyJournal(JournalFile(state_dir))
    return journal.load(t), journal, t


async def test_a_restart_replays_the_signed_input_to_the_same_policy(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    node.take_push(push(entry("alice", "dev1", Access.BLOCK, 3)), 1100.0)
    d = delta(3, 5, entry("carol", "dev3", Access.QUARANTINE, 5))
    node.store.apply_delta(d, 1200.0, signed_delta(d, 1200.0))
    node.take_push(push(entry("dan", "dev4", Access.ALLOW, 7)), 1250.0)  # out of order
    node.take_confirm(5, 1300.0)
    await node.flush()
    index, journal, t = restart(tmp_path)
    held = node.store.current()
    assert index.to_snapshot() == held.to_snapshot()
    assert (index.version, index.newest_held_version) == (5, 7)
    # Freshness: the newest signed issue time that vouched for the state, nothing else.
    assert index.confirmed_at == held.confirmed_at == 1300.0
    assert journal.problem == "" and t.rejections.total == 0 and t.stated == 5
    # No time outside a signed statement is stored.
    data = (tmp_path / "policy.journal").read_bytes()
    assert b"confirmed_at" not in data and b"saved_at" not in data


async def test_a_new_snapshot_resets_the_journal_keeping_what_is_newer(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    node.take_push(push(entry("alice", "dev1", Access.BLOCK, 3)), 1100.0)
    node.take_push(push(entry("dan", "dev4", Access.BLOCK, 6)), 1150.0)  # beyond W
    node.take_confirm(3, 1160.0)
    node.take_snapshot(4, 1200.0, entry("alice", "dev1", Access.BLOCK, 3))
    await node.flush()
    kinds = [r.kind for r in node.journal._records]
    assert kinds == [Kind.SNAPSHOT, Kind.CHANGE]  # the push of 6 only: newer than 4
    index, _, _ = restart(tmp_path)
    assert index.to_snapshot() == node.store.current().to_snapshot()
    assert index.entry("dan", "dev4") is not None and index.confirmed_at == 1200.0


async def test_a_replacement_keeps_nothing_but_the_snapshot(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    node.take_push(push(entry("dan", "dev4", Access.BLOCK, 9)), 1100.0)
    snap = snapshot(3)
    node.store.replace_with_snapshot(snap, 1200.0, signed_snapshot(snap, 1200.0))
    await node.flush()
    index, _, _ = restart(tmp_path)
    assert index.entry("dan", "dev4") is None and index.version == 3


def tamper_payload(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b'"block"')  # bob's entry in the base snapshot
    data[at : at + 7] = b'"allow"'
    path.write_bytes(bytes(data))


def tamper_statement(path: Path, **changes: object) -> None:
    """Rewrite the first record's statement (keeping its signature)."""
    data = path.read_bytes()
    signed, used = decode_record(data)
    statement = json.loads(unb64url(signed.statement_token, "s", 1024))
    statement.update(changes)
    token = b64url(json.dumps(statement, sort_keys=True, separators=(",", ":")).encode())
    forged = SignedPayload(token, signed.signature_token, signed.payload)
    path.write_bytes(encode_record(forged) + data[used:])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (tamper_payload, "payload_mismatch"),
        (lambda p: tamper_statement(p, issued_at_ms=round(T * 1000)), "bad_signature"),
        (lambda p: tamper_statement(p, version=99), "bad_signature"),
        (lambda p: p.write_bytes(b"not a journal\n"), "malformed"),
        (
            lambda p: p.write_bytes(p.read_bytes()[:40] + b"x" * 10 + p.read_bytes()[40:]),
            "malformed",
        ),
    ],
)
async def test_a_tampered_journal_is_refused_moved_aside_and_counted(
    tmp_path: Path,
    damage,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    node.take_confirm(2, 1100.0)
    await node.flush()
    damage(tmp_path / "policy.journal")
    index, journal, t = restart(tmp_path)
    assert not index.loaded  # no policy: the fail mode blocks every request
    assert reason in journal.problem and "moved aside" in journal.problem
    assert t.rejections.by_reason == {reason: 1} and t.rejections.last_source == "journal"
    assert not (tmp_path / "policy.journal").exists()
    assert len(list(tmp_path.glob("policy.journal.corrupt-*"))) == 1


async def test_a_journal_signed_by_another_key_or_for_another_cluster_is_refused(
    tmp_path: Path,
) -> None:
    other = LocalSigner.generate()
    snap = snapshot(2)
    forged = sign(Kind.SNAPSHOT, 2, snap.model_dump_json().encode(), 1000.0, signer=other)
    (tmp_path / "policy.journal").write_bytes(encode_record(forged))
    _, journal, _ = restart(tmp_path)
    assert "unknown_key" in journal.problem
    (tmp_path / "policy.journal").write_bytes(encode_record(signed_snapshot(snap, 1000.0)))
    _, journal, _ = restart(tmp_path, cluster="c9")
    assert "wrong_cluster" in journal.problem


async def test_a_record_issued_beyond_the_clock_skew_is_refused(tmp_path: Path) -> None:
    snap = snapshot(2)
    future = signed_snapshot(snap, T + 301)  # 1 s beyond the 300 s allowed
    (tmp_path / "policy.journal").write_bytes(encode_record(future))
    index, journal, _ = restart(tmp_path)
    assert not index.loaded and "issued_in_future" in journal.problem


async def test_records_that_do_not_follow_a_snapshot_are_refused(tmp_path: Path) -> None:
    d = delta(2, 3)
    (tmp_path / "policy.journal").write_bytes(encode_record(signed_delta(d, 1000.0)))
    _, journal, _ = restart(tmp_path)
    assert "one snapshot, its first record" in journal.problem


async def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    await node.flush()
    node.take_push(push(entry("alice", "dev1", Access.BLOCK, 3)), 1100.0)
    await node.flush()  # appended
    path = tmp_path / "policy.journal"
    path.write_bytes(path.read_bytes()[:-5])  # the append was cut short by a crash
    index, journal, _ = restart(tmp_path)
    assert index.version == 2 and journal.problem == ""
    await journal.flush()  # the journal is written whole again
    assert restart(tmp_path)[0].version == 2
    assert len(path.read_bytes()) == journal._records[0].size


async def test_a_confirmation_vouches_only_for_the_state_it_names(tmp_path: Path) -> None:
    """Someone who removes a push from the file cannot keep the freshness that a later
    confirmation of the version including that push gave."""
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    node.take_push(push(entry("alice", "dev1", Access.BLOCK, 3)), 1100.0)
    node.take_confirm(3, 1500.0)
    await node.flush()
    path = tmp_path / "policy.journal"
    data = path.read_bytes()
    _base, used = decode_record(data)
    _, used_push = decode_record(data[used:])
    path.write_bytes(data[:used] + data[used + used_push :])  # the push removed
    index, journal, _ = restart(tmp_path)
    assert index.version == 2 and journal.problem == ""
    assert index.confirmed_at == 1000.0  # not 1500: that confirmation was about version 3


async def test_superseded_confirmations_are_compacted_keeping_the_base(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    await node.flush()
    for n in range(MAX_CONFIRMS + 1):
        node.take_confirm(2, 1001.0 + n)
        await node.flush()
    assert [r.kind for r in node.journal._records] == [Kind.SNAPSHOT, Kind.CONFIRM]
    index, _, _ = restart(tmp_path)
    assert index.confirmed_at == 1001.0 + MAX_CONFIRMS and index.version == 2


async def test_a_growing_journal_asks_for_a_new_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy_journal, "MIN_TAIL_BYTES", 20_000)
    node = Node(tmp_path)
    assert node.journal.wants_snapshot  # nothing yet
    node.take_snapshot(2, 1000.0)
    assert not node.journal.wants_snapshot
    assert node.journal.kids() == {signed_snapshot(snapshot(), 1.0).statement().kid}
    tail = 0
    for v in range(3, 100):
        devices = tuple(entry(f"user{n:03}", "dev", Access.ALLOW, v) for n in range(10))
        node.take_push(PushChange(cluster_id="c1", version=v, devices=devices), 1000.0 + v)
        tail += node.journal._records[-1].size
        assert node.journal.wants_snapshot is (tail > 20_000)
        if tail > 20_000:
            break
    node.take_snapshot(v, 1100.0)  # the next refresh's full snapshot
    assert not node.journal.wants_snapshot


async def test_an_unsigned_file_of_an_earlier_release_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "policy.lkg").write_text('{"format":"seg-gateway-policy"}\n{}')
    index, journal, _ = restart(tmp_path)
    assert not index.loaded and journal.problem == ""
    assert [p.name.startswith("policy.lkg.unsigned-") for p in tmp_path.iterdir()] == [True]


# --- an operator's policy file ------------------------------------------------------------


def test_a_signed_policy_file_is_verified_and_as_fresh_as_its_signature(tmp_path: Path) -> None:
    path = tmp_path / "policy.signed"
    path.write_bytes(encode_record(signed_snapshot(snapshot(2), 1000.0)))
    air_gapped = trust(lambda: T, cluster="")  # its cluster: the file's own
    loaded = load_policy_file(path, air_gapped, allow_unsigned=False, now=T)
    assert loaded.signed and loaded.index.version == 2 and loaded.index.confirmed_at == 1000.0
    # Reading it again later does not make it fresher.
    assert (
        load_policy_file(path, air_gapped, allow_unsigned=False, now=T + 50).index.confirmed_at
        == 1000.0
    )
    path.write_bytes(path.read_bytes().replace(b'"block"', b'"allow"'))
    with pytest.raises(PolicyFileError, match="payload_mismatch"):
        load_policy_file(path, air_gapped, allow_unsigned=False, now=T)
    assert air_gapped.rejections.by_reason == {"payload_mismatch": 1}


def test_an_older_signed_policy_file_does_not_replace_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.signed"
    air_gapped = trust(lambda: T, cluster="")
    path.write_bytes(encode_record(signed_snapshot(snapshot(5), 2000.0)))
    load_policy_file(path, air_gapped, allow_unsigned=False, now=T)
    path.write_bytes(encode_record(signed_snapshot(snapshot(4), 3000.0)))
    with pytest.raises(PolicyFileError, match="replayed"):
        load_policy_file(path, air_gapped, allow_unsigned=False, now=T)


def test_an_unsigned_policy_file_needs_the_explicit_option(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(snapshot(2).model_dump_json())
    t = trust(lambda: T, cluster="")
    with pytest.raises(PolicyFileError, match="not a signed policy file"):
        load_policy_file(path, t, allow_unsigned=False, now=T)
    loaded = load_policy_file(path, t, allow_unsigned=True, now=T)
    assert not loaded.signed and loaded.index.confirmed_at == T  # the operator vouches now
    path.write_text('{"cluster_id": "c1"}')
    with pytest.raises(PolicyFileError, match="not a valid PolicySnapshot"):
        load_policy_file(path, t, allow_unsigned=True, now=T)
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy_file(tmp_path / "missing", t, allow_unsigned=True, now=T)


def test_a_connected_nodes_journal_is_a_valid_policy_file(tmp_path: Path) -> None:
    snap = snapshot(2)
    change = push(entry("alice", "dev1", Access.BLOCK, 3))
    records = [signed_snapshot(snap, 1000.0), signed_change(change, 1100.0)]
    path = tmp_path / "copied.journal"
    path.write_bytes(b"".join(encode_record(r) for r in records))
    loaded = load_policy_file(path, trust(lambda: T, cluster=""), allow_unsigned=False, now=T)
    assert loaded.index.version == 3 and len(loaded.records) == 2


async def test_a_write_cancelled_at_shutdown_finishes_before_the_last_one(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.take_snapshot(2, 1000.0)
    first = asyncio.create_task(node.flush())
    await asyncio.sleep(0)  # the write is under way in its thread
    first.cancel()
    node.take_push(push(entry("alice", "dev1", Access.BLOCK, 3)), 1100.0)
    await node.flush()  # waits for the first write, then appends the push once
    with pytest.raises(asyncio.CancelledError):
        await first
    records = decode_records((tmp_path / "policy.journal").read_bytes(), allow_torn=False)
    assert [r.statement().kind for r in records.records] == [Kind.SNAPSHOT, Kind.CHANGE]
    assert restart(tmp_path)[0].version == 3
