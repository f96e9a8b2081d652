"""Fetches verified before they are applied (``PolicySync`` with ``PolicyTrust``), over
httpx's MockTransport: freshness from signed issue times, refusals counted and the
policy in force kept, key sets learned before each refresh, and a re-signed snapshot
fetched when the active key changed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from onprem_gateway.agent import policy_sync
from onprem_gateway.agent.cloud import ControlPlaneClient
from onprem_gateway.agent.persist import JournalFile
from onprem_gateway.agent.policy_journal import PolicyJournal
from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore, compact_op
from onprem_gateway.agent.policy_sync import LinkStatus, PolicySync
from onprem_gateway.agent.policy_trust import PolicyTrust
from onprem_gateway.agent.signing_keys_file import SigningKeysFile
from onprem_gateway.core.policy_index import COMPARE_SLICE, PolicyIndex
from seg_contract import Access, PolicyDelta, PolicySnapshot
from seg_contract.http import DELTA_PATH, POLICY_PATH, SIGNING_KEYS_PATH
from seg_contract.key_ring import AnnouncedKey, AnnouncedState, SigningKeySet
from seg_contract.signing import Kind, LocalSigner, SignedPayload
from tests.unit.gateway_agent.helpers import (
    SIGNER,
    delta,
    entry,
    push,
    sign,
    signed_push,
    snapshot,
)

NOW = 50_000.0


@dataclass
class Plane:
    """Enough of the control plane's gateway routes, signing with ``signer``."""

    snapshot: PolicySnapshot = field(default_factory=lambda: snapshot(2))
    signer: LocalSigner = SIGNER
    keys: SignedPayload | None = None
    at: float = NOW  # the issue time of what it signs
    unsigned: bool = False
    confirm_version: int | None = None  # a 304 that confirms another version
    requests: list[str] = field(default_factory=list)

    def sign(self, kind: Kind, version: int, payload: bytes, since: int = 0) -> SignedPayload:
        return sign(kind, version, payload, self.at, since=since, signer=self.signer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        inm = request.headers.get("If-None-Match")
        self.requests.append(f"{request.url.path} {inm or ''}".strip())
        if request.url.path == SIGNING_KEYS_PATH:
            if self.keys is None:
                return httpx.Response(404)
            return httpx.Response(200, headers=self.keys.headers(), content=self.keys.payload)
        if request.url.path == POLICY_PATH:
            version = self.snapshot.version
            if inm == f'"c1-{version}"':
                confirmed = self.sign(Kind.CONFIRM, self.confirm_version or version, b"")
                return httpx.Response(304, headers=confirmed.headers())
            body = self.snapshot.model_dump_json().encode()
            if self.unsigned:
                return httpx.Response(200, content=body)
            signed = self.sign(Kind.SNAPSHOT, version, body)
            return httpx.Response(200, headers=signed.headers(), content=body)
        if request.url.path == DELTA_PATH:
            since = int(request.url.params["since"])
            d = delta(since, max(since, self.snapshot.version))
            signed = self.sign(Kind.DELTA, d.version, d.model_dump_json().encode(), since=since)
            return httpx.Response(200, headers=signed.headers(), content=signed.payload)
        return httpx.Response(404)


@dataclass
class Node:
    sync: PolicySync
    store: PolicyStore
    status: LinkStatus
    trust: PolicyTrust
    journal: PolicyJournal


def node(plane: Plane, tmp_path: Path) -> Node:
    client = ControlPlaneClient(
        "https://cp.example.com", "segc_c1_k1_s", "n1", transport=httpx.MockTransport(plane.answer)
    )
    store, status = PolicyStore(), LinkStatus()
    trust = PolicyTrust(
        (SIGNER.public,),
        cluster_id="c1",
        max_skew_s=300,
        keys_file=SigningKeysFile(tmp_path),
        clock=lambda: NOW,
    )
    journal = PolicyJournal(JournalFile(tmp_path))
    journal.attach(store)
    return Node(
        PolicySync(client, store, status, trust, journal=journal, clock=lambda: NOW),
        store,
        status,
        trust,
        journal,
    )


async def test_a_refresh_learns_the_keys_then_applies_the_verified_snapshot(tmp_path: Path) -> None:
    plane = Plane(at=NOW - 10)
    n = node(plane, tmp_path)
    assert await n.sync.full()
    assert plane.requests == [SIGNING_KEYS_PATH, POLICY_PATH]
    assert n.store.current().version == 2
    assert n.store.current().confirmed_at == NOW - 10  # its signed issue time
    plane.at = NOW - 5
    assert await n.sync.full()
    assert plane.requests[-1] == f'{POLICY_PATH} "c1-2"' and n.status.not_modified == 1
    assert n.store.current().confirmed_at == NOW - 5  # the 304's signed confirmation


async def test_refused_answers_are_counted_and_the_policy_in_force_is_kept(tmp_path: Path) -> None:
    plane = Plane()
    n = node(plane, tmp_path)
    assert await n.sync.full()
    plane.snapshot = snapshot(3, entry("alice", "dev1", Access.BLOCK, 3))
    plane.unsigned = True
    plane.snapshot, held = plane.snapshot, n.store.current()
    assert not await n.sync.full()  # 200 without a signature
    plane.unsigned, plane.signer = False, LocalSigner.generate()
    assert not await n.sync.full()  # signed by a key the node does not trust
    assert n.store.current() is held
    assert n.trust.rejections.by_reason == {"unsigned": 1, "unknown_key": 1}
    assert n.status.fetches_refused == 2 and "refused" in n.status.last_error


async def test_a_304_confirming_another_version_gives_no_freshness(tmp_path: Path) -> None:
    plane = Plane(at=NOW - 100)
    n = node(plane, tmp_path)
    assert await n.sync.full()
    plane.at, plane.confirm_version = NOW, 7
    assert not await n.sync.full()
    assert n.store.current().confirmed_at == NOW - 100
    assert n.trust.rejections.by_reason == {"replayed": 1}


async def test_an_older_snapshot_than_the_control_plane_stated_is_a_replay(
    tmp_path: Path,
) -> None:
    plane = Plane(snapshot=snapshot(5))
    n = node(plane, tmp_path)
    assert await n.sync.full()
    plane.snapshot = snapshot(4)  # as a man in the middle would replay it
    assert not await n.sync.full()
    assert n.store.current().version == 5
    assert n.trust.rejections.by_reason == {"replayed": 1}


async def test_a_snapshot_behind_a_push_that_overtook_it_is_applied(tmp_path: Path) -> None:
    """A push of W + 1 lands before W moves: the snapshot of W that follows is authentic
    and keeps the pushed entry (no false alarm)."""
    plane = Plane()
    n = node(plane, tmp_path)
    assert await n.sync.full()
    raw = signed_push(push(entry("carol", "dev3", Access.BLOCK, 3)), NOW)
    message, _verified, signed = n.trust.push(raw, n.store.current())
    n.store.apply_push(message, signed=signed)
    assert n.store.current().version == 3
    plane.at = NOW + 1
    assert await n.sync.full()  # If-None-Match "c1-3": the snapshot of 2 comes back
    assert plane.requests[-1] == f'{POLICY_PATH} "c1-3"' and n.status.snapshots == 2
    assert n.store.current().entry("carol", "dev3") is not None
    assert n.store.current().confirmed_at == NOW + 1
    assert n.trust.rejections.total == 0


def key_set(version: int, active: LocalSigner, previous: LocalSigner | None = None) -> bytes:
    keys = [
        AnnouncedKey(kid=active.kid, public_key=active.public.spki_b64, state=AnnouncedState.ACTIVE)
    ]
    if previous is not None:
        keys.append(
            AnnouncedKey(
                kid=previous.kid, public_key=previous.public.spki_b64, state=AnnouncedState.PREVIOUS
            )
        )
    return (
        SigningKeySet(cluster_id="c1", version=version, keys=tuple(keys)).model_dump_json().encode()
    )


async def test_a_delta_since_another_version_than_asked_is_refused(tmp_path: Path) -> None:
    plane = Plane(snapshot=snapshot(5))
    n = node(plane, tmp_path)
    assert await n.sync.full()
    plane.snapshot = snapshot(6)
    assert await n.sync.delta()
    assert n.store.current().version == 6
    answer = plane.answer
    replayed = plane.sign(Kind.DELTA, 6, delta(4, 6).model_dump_json().encode(), since=4)

    def replaying(request: httpx.Request) -> httpx.Response:
        if request.url.path == DELTA_PATH:
            return httpx.Response(200, headers=replayed.headers(), content=replayed.payload)
        return answer(request)

    plane.answer = replaying  # type: ignore[method-assign]
    n.sync._client = ControlPlaneClient(
        "https://cp.example.com", "segc_c1_k1_s", "n1", transport=httpx.MockTransport(replaying)
    )
    assert not await n.sync.delta()
    assert n.trust.rejections.by_reason == {"replayed": 1}


async def test_after_a_rotation_the_stored_policy_is_fetched_signed_by_the_new_key(
    tmp_path: Path,
) -> None:
    plane = Plane()
    n = node(plane, tmp_path)
    assert await n.sync.full()
    assert await n.sync.full()
    assert plane.requests[-1] == f'{POLICY_PATH} "c1-2"'
    new = LocalSigner.generate()
    # Key set 1: the new key announced as next (signed by the pinned key).
    announce = SigningKeySet(
        cluster_id="c1",
        version=1,
        keys=(
            AnnouncedKey(
                kid=SIGNER.kid, public_key=SIGNER.public.spki_b64, state=AnnouncedState.ACTIVE
            ),
            AnnouncedKey(kid=new.kid, public_key=new.public.spki_b64, state=AnnouncedState.NEXT),
        ),
    )
    plane.keys = sign(Kind.KEYS, 1, announce.model_dump_json().encode(), NOW)
    assert await n.sync.full()
    assert plane.requests[-1] == f'{POLICY_PATH} "c1-2"'  # still the active key: a 304
    # Key set 2: the new key active; the control plane now signs with it.
    plane.keys = sign(Kind.KEYS, 2, key_set(2, new, SIGNER), NOW, signer=SIGNER)
    plane.signer = new
    assert await n.sync.full()
    assert plane.requests[-1] == POLICY_PATH  # no If-None-Match: re-signed by the new key
    assert n.journal.kids() == {new.kid} and n.trust.active_kid == new.kid
    assert await n.sync.full()
    assert plane.requests[-1] == f'{POLICY_PATH} "c1-2"'
    assert n.trust.rejections.total == 0


@pytest.mark.parametrize("how", ["refresh", "replace"])
async def test_a_push_is_applied_between_the_slices_of_a_large_snapshot(
    tmp_path: Path, how: str
) -> None:
    # 6,000 devices: three slices of ~512 KiB (``core.snapshot_slices``). A replacement
    # (after a diverged digest) keeps the push too: it is recorded and applied again.
    devices = tuple(entry(f"user{i}", f"dev{i}", Access.ALLOW, 1) for i in range(6_000))
    plane = Plane(snapshot=snapshot(5, *devices), at=NOW - 10)
    n = node(plane, tmp_path)
    n.store.apply_snapshot(snapshot(1), NOW - 20)  # the policy in force meanwhile
    blocked = entry("user7", "dev7", Access.BLOCK, 6)  # newer than the snapshot
    parsing = asyncio.Event()
    seen_during_parse: list[bool] = []
    slices = n.trust.snapshot_in_slices

    def watched(signed: SignedPayload, *, live: bool = True):  # type: ignore[no-untyped-def]
        steps = slices(signed, live=live)
        next(steps)
        parsing.set()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                seen_during_parse.append(n.store.current().entry("user7", "dev7") is not None)
                return done.value
            yield

    async def pusher() -> None:
        await parsing.wait()
        n.store.apply_push(push(blocked))

    n.trust.snapshot_in_slices = watched  # type: ignore[method-assign]
    task = asyncio.create_task(pusher())
    assert await (n.sync.full() if how == "refresh" else n.sync.replace("diverged"))
    await task
    assert seen_during_parse == [True]  # the push was in force before the parse ended
    index = n.store.current()
    assert index.device_count() == 6_000 and index.version == 6
    assert index.entry("user7", "dev7") == blocked  # kept over the snapshot's older entry


@pytest.mark.parametrize("how", ["refresh", "replace"])
async def test_the_policy_taken_over_is_let_go_a_slice_per_turn(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = Plane(snapshot=snapshot(5, entry("carol", "dev3", Access.ALLOW, 5)), at=NOW - 10)
    n = node(plane, tmp_path)
    n.store.apply_snapshot(snapshot(1, entry("gone", "dev9", Access.ALLOW, 1)), NOW - 20)
    previous = n.store.current()
    expected = {id(o) for o in previous.references()}
    given: list[set[int]] = []
    holders: list[int] = []
    release = policy_sync.release_gradually

    async def spy(references: Iterator[object]) -> None:
        held = list(references)
        given.append({id(o) for o in held})
        await release(iter(held))
        # Who still holds the policy taken over: only this test (its variable and
        # getrefcount's argument), not the caller's frame or a listener.
        holders.append(sys.getrefcount(previous) - 2)
        # Nor its tables, but for the policy itself (nothing the comparison with the
        # snapshot worked out holds them: ``KnownChanges``).
        holders.append(sys.getrefcount(previous._entries) - 1)

    monkeypatch.setattr(policy_sync, "release_gradually", spy)
    assert await (n.sync.full() if how == "refresh" else n.sync.replace("diverged"))
    assert given == [expected]
    assert holders == [0, 1]


async def test_a_replacement_is_counted_when_it_is_swapped_in_not_after_the_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The release takes turns; whoever sees the new policy in them (the link's pong,
    # ``/readyz``, a test) must also see the replacement counted.
    plane = Plane(snapshot=snapshot(5, entry("carol", "dev3", Access.BLOCK, 5)), at=NOW - 10)
    n = node(plane, tmp_path)
    n.store.apply_snapshot(snapshot(1, entry("carol", "dev3", Access.ALLOW, 1)), NOW - 20)
    seen: list[tuple[int, dict[str, int]]] = []
    release = policy_sync.release_gradually

    async def spy(references: Iterator[object]) -> None:
        seen.append((n.store.current().version, dict(n.status.replacements)))
        await release(references)

    monkeypatch.setattr(policy_sync, "release_gradually", spy)
    assert await n.sync.replace("uncommitted")
    assert seen == [(5, {"uncommitted": 1})]
    assert n.status.replacements == {"uncommitted": 1}


@pytest.mark.parametrize("push_meanwhile", [False, True])
async def test_what_a_refresh_changed_is_worked_out_before_the_swap(
    tmp_path: Path, push_meanwhile: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers are sent what a refreshed snapshot changed. It is compared a slice per
    # turn before the swap; a push applied meanwhile makes that comparison stale, and
    # the swap then compares again (``compact_op``): the delta is right either way.
    devices = [entry(f"user{i}", f"dev{i}", Access.ALLOW, 1) for i in range(30_000)]
    refreshed = [
        entry("user9", "dev9", Access.BLOCK, 5) if i == 9 else e for i, e in enumerate(devices)
    ]
    n = node(Plane(snapshot=snapshot(5, *refreshed), at=NOW - 10), tmp_path)
    n.store.apply_snapshot(snapshot(1, *devices), NOW - 20)
    compare = PolicyIndex.changes_in_slices
    steps_run: list[int] = []

    def counted(self: PolicyIndex, before: PolicyIndex, slice_size: int = COMPARE_SLICE):  # type: ignore[no-untyped-def]
        steps, count = compare(self, before, slice_size), 0
        while True:
            try:
                next(steps)
            except StopIteration as done:
                steps_run.append(count)
                return done.value
            count += 1
            if push_meanwhile and count == 1 and not steps_run:
                n.store.apply_push(push(entry("user3", "dev3", Access.BLOCK, 6)))
            yield

    held = [n.store.current()]
    sent: list[tuple[PolicyOp, list[str]]] = []

    def listener(op: PolicyOp, index: PolicyIndex) -> None:
        if op.kind == "snapshot":  # as the worker pool turns it into the workers' delta
            compact = compact_op(op, held[-1], index)
            assert isinstance(compact.body, PolicyDelta)
            sent.append((op, sorted(e.user for e in compact.body.devices)))
        held.append(index)

    n.store.subscribe(listener)
    monkeypatch.setattr(PolicyIndex, "changes_in_slices", counted)
    assert await n.sync.full()
    # 30,000 devices, a slice a turn, keys then versions; after the push, compared again
    # in the swap.
    steps = 2 * -(-30_000 // COMPARE_SLICE)
    assert steps_run == ([steps, steps] if push_meanwhile else [steps])
    ((op, users),) = sent
    assert users == ["user9"]
    assert op.changes is not None
    # Worked out ahead and used, unless the push changed the policy meanwhile.
    assert op.changes.matches(held[-1], held[-2]) is not push_meanwhile
