"""The policy index under the committed-version protocol: exactness, the digest (kept
incrementally, equal to ``seg_contract.digest.policy_digest`` over the same policy), the
replacing snapshot, and a property test over random interleavings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core.policy_index import PolicyIndex, PolicyMismatchError
from seg_contract import (
    Access,
    ClusterSettings,
    DeviceEntry,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    UserCredential,
)
from seg_contract.digest import policy_digest, to_hex
from tests.unit.gateway_core.builders import NOW, T0, credential, entry, snapshot

A, B = Access.ALLOW, Access.BLOCK


def push(
    version: int, *devices: DeviceEntry, settings: ClusterSettings | None = None
) -> PushChange:
    return PushChange(cluster_id="c1", version=version, devices=devices, settings=settings)


def digest_of(index: PolicyIndex) -> int:
    """The definition, over what the index holds."""
    return policy_digest(
        index.devices(), index.credentials(), index.settings, index.settings_version
    )


# --- exactness ---------------------------------------------------------------------------


def test_a_snapshot_with_nothing_newer_than_its_version_is_exact() -> None:
    index = PolicyIndex.from_snapshot(
        snapshot(version=5, devices=(entry("a", "d", version=5),)), NOW
    )
    assert index.exact and index.newest_held_version == 5


def test_a_snapshot_holding_a_newer_write_is_not_exact_until_its_push() -> None:
    # W = 5, but v6 committed while the snapshot was read and is in it.
    index = PolicyIndex.from_snapshot(
        snapshot(version=5, devices=(entry("a", "d", version=6),)), NOW
    )
    assert not index.exact and index.version == 5
    # The push of 6 changes no entry (already held) but moves V: exact.
    result = index.apply_push(push(6, entry("a", "d", version=6)))
    assert result.changed and result.index.version == 6 and result.index.exact


def test_an_out_of_order_push_makes_the_index_inexact_until_the_gap_closes() -> None:
    index = PolicyIndex.from_snapshot(snapshot(version=5), NOW)
    ahead = index.apply_push(push(7, entry("b", "d", version=7))).index
    assert ahead.version == 5 and not ahead.exact
    closed = ahead.apply_push(push(6)).index  # an empty version still moves V
    assert closed.version == 7 and closed.exact
    # Even a pending version that changed nothing counts: exact means nothing pending at
    # all, a definition that needs no knowledge of what each version changed.
    empty_ahead = closed.apply_push(push(9)).index
    assert empty_ahead.version == 7 and not empty_ahead.exact


def test_newer_settings_make_the_index_inexact() -> None:
    snap = snapshot(version=5).model_copy(update={"settings_version": 6})
    assert not PolicyIndex.from_snapshot(snap, NOW).exact


def test_an_empty_index_is_never_exact() -> None:
    assert not PolicyIndex.empty().exact


# --- the digest --------------------------------------------------------------------------


def base() -> PolicyIndex:
    snap = snapshot(
        version=10,
        devices=(entry("alice", "dev1", A, version=3), entry("bob", "dev2", B, version=7)),
        credentials=(credential("alice", version=4, pw1_hashes=("scrypt$x",)),),
    )
    return PolicyIndex.from_snapshot(snap, NOW)


def test_the_digest_is_policy_digest_over_the_same_policy() -> None:
    index = base()
    assert not index.digest_known
    expected = policy_digest(
        (entry("bob", "dev2", B, version=7), entry("alice", "dev1", A, version=3)),
        (credential("alice", version=4, pw1_hashes=("scrypt$x",)),),
        ClusterSettings(),
        0,
    )
    assert index.digest() == expected and index.digest_known
    assert index.digest_hex() == to_hex(expected) and len(index.digest_hex()) == 32


def test_pushes_and_deltas_keep_the_digest_incrementally() -> None:
    index = base()
    index.digest()  # known from here on
    steps = [
        lambda i: i.apply_push(push(11, entry("alice", "dev1", B, version=11))).index,
        lambda i: i.apply_push(push(12, entry("carol", "x", A, version=12))).index,
        lambda i: (
            i.apply_push(
                PushChange(
                    cluster_id="c1",
                    version=13,
                    credentials=(credential("alice", version=13, enabled=False),),
                )
            ).index
        ),
        lambda i: i.apply_push(push(14, settings=ClusterSettings(test_mode=True))).index,
        lambda i: i.apply_delta(
            PolicyDelta(
                cluster_id="c1",
                since_version=14,
                version=16,
                generated_at=T0,
                settings=ClusterSettings(report_interval_s=60),
                settings_version=16,
                devices=(entry("dave", "y", B, version=15), entry("bob", "dev2", A, version=16)),
            ),
            NOW + 1,
        ),
        lambda i: i.with_confirmation(NOW + 2),
    ]
    for step in steps:
        index = step(index)
        assert index.digest_known, "carried forward, never recomputed in full"
        assert index.digest() == digest_of(index)
    assert index.version == 16 and index.exact


def test_a_push_onto_an_index_whose_digest_is_unknown_leaves_it_unknown() -> None:
    # Worker processes never ask for a digest: a push must not compute one in full.
    index = base().apply_push(push(11, entry("alice", "dev1", B, version=11))).index
    assert not index.digest_known
    assert index.digest() == digest_of(index)


def test_a_change_that_loses_to_a_newer_entry_leaves_the_digest_alone() -> None:
    index = base()
    before = index.digest()
    result = index.apply_push(push(6, entry("bob", "dev2", A, version=6)))  # held: v7
    assert not result.changed and result.index.digest() == before


def test_equal_policies_reached_by_different_paths_have_equal_digests() -> None:
    by_pushes = base()
    by_pushes.digest()
    by_pushes = by_pushes.apply_push(push(11, entry("carol", "x", A, version=11))).index
    by_snapshot = PolicyIndex.from_snapshot(
        snapshot(
            version=11,
            devices=(
                entry("carol", "x", A, version=11),
                entry("bob", "dev2", B, version=7),
                entry("alice", "dev1", A, version=3),
            ),
            credentials=(credential("alice", version=4, pw1_hashes=("scrypt$x",)),),
        ),
        NOW,
    )
    assert by_pushes.digest() == by_snapshot.digest()
    tampered = by_snapshot.replace_with_snapshot(
        by_snapshot.to_snapshot().model_copy(
            update={"devices": (entry("carol", "x", B, version=11),)}
        ),
        NOW,
    )
    assert tampered.digest() != by_snapshot.digest()


# --- replacing versus merging --------------------------------------------------------------


def hand_edited() -> PolicyIndex:
    """A last-known-good file someone edited: bob's block became an allow at v999."""
    return PolicyIndex.from_snapshot(
        snapshot(
            version=10,
            devices=(entry("alice", "dev1", A, version=3), entry("bob", "dev2", A, version=999)),
        ),
        NOW,
    )


def good_snapshot() -> PolicySnapshot:
    return snapshot(
        version=10,
        devices=(entry("alice", "dev1", A, version=3), entry("bob", "dev2", B, version=7)),
    )


def test_a_merge_keeps_the_inflated_entry_a_replace_does_not() -> None:
    merged = hand_edited().apply_snapshot(good_snapshot(), NOW + 1)
    assert merged.entry("bob", "dev2").access is A  # type: ignore[union-attr]  # newest wins
    assert not merged.exact  # ... which is why it never reports a digest
    replaced = hand_edited().replace_with_snapshot(good_snapshot(), NOW + 1)
    assert replaced.entry("bob", "dev2").access is B  # type: ignore[union-attr]
    assert replaced.exact and replaced.version == 10 and replaced.confirmed_at == NOW + 1
    assert replaced.digest() == PolicyIndex.from_snapshot(good_snapshot(), NOW).digest()


def test_a_replace_may_lower_the_applied_version() -> None:
    inflated = PolicyIndex.from_snapshot(snapshot(version=500), NOW)
    assert inflated.replace_with_snapshot(good_snapshot(), NOW).version == 10


def test_a_replace_for_another_cluster_is_refused() -> None:
    with pytest.raises(PolicyMismatchError):
        base().replace_with_snapshot(snapshot(cluster_id="c2"), NOW)


def test_a_merged_snapshot_advances_over_pushes_already_applied_out_of_order() -> None:
    index = PolicyIndex.from_snapshot(snapshot(version=5), NOW)
    index = index.apply_push(push(7, entry("b", "d", version=7))).index
    merged = index.apply_snapshot(snapshot(version=6), NOW)
    assert merged.version == 7 and merged.exact
    assert merged.entry("b", "d") is not None


def test_a_merged_snapshot_keeps_newer_settings() -> None:
    index = base().apply_push(push(11, settings=ClusterSettings(test_mode=True))).index
    merged = index.apply_snapshot(snapshot(version=10), NOW)
    assert merged.settings.test_mode and merged.settings_version == 11


# --- property: random interleavings against a model of the control plane -------------------

KEYS = [(f"u{u}", f"d{d}") for u in range(3) for d in range(2)]


@dataclass
class ControlPlaneModel:
    """Committed versions 1..N; each changes a few keys (or the settings, or nothing)."""

    changes: dict[int, list[DeviceEntry]] = field(default_factory=dict)
    settings: dict[int, ClusterSettings] = field(default_factory=dict)
    creds: dict[int, list[UserCredential]] = field(default_factory=dict)

    @property
    def head(self) -> int:
        return max(self.changes, default=0)

    def devices_at(self, at: int) -> list[DeviceEntry]:
        newest: dict[tuple[str, str], DeviceEntry] = {}
        for v in sorted(self.changes):
            if v <= at:
                for e in self.changes[v]:
                    newest[(e.user, e.device_id)] = e
        return list(newest.values())

    def creds_at(self, at: int) -> list[UserCredential]:
        newest: dict[str, UserCredential] = {}
        for v in sorted(self.creds):
            if v <= at:
                for c in self.creds[v]:
                    newest[c.user] = c
        return list(newest.values())

    def settings_at(self, at: int) -> tuple[ClusterSettings, int]:
        found = [v for v in self.settings if v <= at]
        return (self.settings[max(found)], max(found)) if found else (ClusterSettings(), 0)

    def digest_at(self, at: int) -> int:
        return policy_digest(self.devices_at(at), self.creds_at(at), *self.settings_at(at))

    def snapshot(self, w: int, read_until: int) -> PolicySnapshot:
        settings, settings_version = self.settings_at(read_until)
        return PolicySnapshot(
            cluster_id="c1",
            version=w,
            generated_at=T0,
            settings=settings,
            settings_version=settings_version,
            devices=tuple(self.devices_at(read_until)),
            credentials=tuple(self.creds_at(read_until)),
        )

    def delta(self, since: int, w: int, read_until: int) -> PolicyDelta:
        touched = {(e.user, e.device_id) for v in range(since + 1, w + 1) for e in self.changes[v]}
        users = {c.user for v in range(since + 1, w + 1) for c in self.creds.get(v, [])}
        settings_changed = any(since < v <= w for v in self.settings)
        settings, settings_version = self.settings_at(read_until)
        return PolicyDelta(
            cluster_id="c1",
            since_version=since,
            version=w,
            generated_at=T0,
            settings=settings if settings_changed else None,
            settings_version=settings_version if settings_changed else 0,
            devices=tuple(
                e for e in self.devices_at(read_until) if (e.user, e.device_id) in touched
            ),
            credentials=tuple(c for c in self.creds_at(read_until) if c.user in users),
        )

    def push(self, v: int) -> PushChange:
        return PushChange(
            cluster_id="c1",
            version=v,
            devices=tuple(self.changes[v]),
            credentials=tuple(self.creds.get(v, [])),
            settings=self.settings.get(v),
        )


@st.composite
def histories(draw: st.DrawFn) -> ControlPlaneModel:
    model = ControlPlaneModel()
    for v in range(1, draw(st.integers(3, 14)) + 1):
        keys = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
        model.changes[v] = [
            DeviceEntry(
                user=u,
                device_id=d,
                access=draw(st.sampled_from(list(Access))),
                reason="r",
                source="compliance",
                version=v,
                updated_at=T0 + timedelta(seconds=v),
            )
            for u, d in keys
        ]
        if draw(st.integers(0, 5)) == 0:
            model.settings[v] = ClusterSettings(report_interval_s=10 + v)
        if draw(st.integers(0, 5)) == 0:
            model.creds[v] = [credential(f"u{draw(st.integers(0, 2))}", version=v)]
    return model


OPS = st.lists(
    st.tuples(
        st.sampled_from(["push", "push", "push", "delta", "snapshot", "digest"]),
        st.integers(0, 20),
        st.integers(0, 2),
    ),
    max_size=40,
)


def check_invariant(index: PolicyIndex, model: ControlPlaneModel) -> None:
    for e in model.devices_at(index.version):
        held = index.entry(e.user, e.device_id)
        assert held is not None and held.version >= e.version, (e, index)
    for c in model.creds_at(index.version):
        held_c = index.credential(c.user)
        assert held_c is not None and held_c.version >= c.version
    assert index.settings_version >= model.settings_at(index.version)[1]
    if index.digest_known:
        assert index.digest() == digest_of(index), "the incremental digest drifted"
    if index.exact:
        assert index.digest() == model.digest_at(index.version), "exact but not the policy at V"


@settings(max_examples=150, deadline=None)
@given(model=histories(), ops=OPS, start=st.integers(0, 3))
def test_random_interleavings_keep_the_invariant_and_the_digest(
    model: ControlPlaneModel, ops: list[tuple[str, int, int]], start: int
) -> None:
    head = model.head
    start = min(start, head)
    index = PolicyIndex.from_snapshot(model.snapshot(start, start), NOW)
    index.digest()
    committed = start  # W only moves forward
    for kind, n, extra in ops:
        committed = min(head, max(committed, n % (head + 1)))
        read_until = min(head, committed + extra)  # writes that land while it is read
        if kind == "push":
            index = index.apply_push(model.push(1 + n % head)).index  # any order, dupes
        elif kind == "delta":
            w = max(committed, index.version)
            index = index.apply_delta(model.delta(index.version, w, max(w, read_until)), NOW)
        elif kind == "snapshot":
            index = index.apply_snapshot(model.snapshot(committed, read_until), NOW)
        else:
            index.digest()
        check_invariant(index, model)
    # One anti-entropy round: a delta to the head leaves the node exact and in agreement.
    final = index.apply_delta(model.delta(index.version, head, head), NOW)
    assert final.exact and final.version == head
    assert final.digest() == model.digest_at(head)
