"""Policy index: lookups and versioned transitions (seg_contract.models' theory)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from onprem_gateway.core import layered_map
from onprem_gateway.core.policy_index import PolicyIndex, PolicyMismatchError
from onprem_gateway.core.steps import finish
from seg_contract import (
    Access,
    ClusterSettings,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushPong,
    PushResync,
    PushRevoked,
    RuleField,
)
from tests.unit.gateway_core.builders import NOW, T0, credential, entry, rule, snapshot

A, B, Q = Access.ALLOW, Access.BLOCK, Access.QUARANTINE


def base_index() -> PolicyIndex:
    snap = snapshot(
        version=10,
        devices=(entry("alice", "dev1", A, version=3), entry("bob", "dev2", B, version=7)),
        credentials=(credential("alice", version=4, pw1_hashes=("scrypt$x",)),),
        blocked_users=("CORP\\Eve", "mallory@example.com"),
        rules=(rule("r1", RuleField.DEVICE_TYPE, "WP*", B),),
    )
    return PolicyIndex.from_snapshot(snap, confirmed_at=NOW)


def device_push(version: int, user: str, device: str, access: Access) -> PushChange:
    return PushChange(
        cluster_id="c1", version=version, devices=(entry(user, device, access, version=version),)
    )


def delta(since: int, version: int, *devices, settings=None, cluster_id="c1") -> PolicyDelta:  # type: ignore[no-untyped-def]
    return PolicyDelta(
        cluster_id=cluster_id,
        since_version=since,
        version=version,
        generated_at=T0,
        settings=settings,
        settings_version=version if settings is not None else 0,
        devices=tuple(devices),
    )


# --- construction and lookups ----------------------------------------------------------


def test_snapshot_lookups() -> None:
    index = base_index()
    assert (index.cluster_id, index.version, index.confirmed_at, index.loaded) == (
        "c1",
        10,
        NOW,
        True,
    )
    found = index.entry("alice", "dev1")
    assert found is not None and found.access is A
    assert index.entry("alice", "nope") is None
    assert index.credential("alice") is not None and index.credential("bob") is None
    assert index.blocked_users == frozenset({"eve", "mallory"})
    assert [compiled.rule.id for compiled in index.rules] == ["r1"]
    assert index.rules[0].matches("wp8") and not index.rules[0].matches("iPhone")
    assert index.device_count() == 2


def test_entries_are_keyed_by_normalised_identities() -> None:
    index = PolicyIndex.from_snapshot(
        snapshot(devices=(entry("CORP\\Alice", " ABC ", A),)), confirmed_at=NOW
    )
    assert index.entry("alice", "abc") is not None


def test_duplicate_keys_in_a_snapshot_keep_the_newest() -> None:
    snap = snapshot(
        devices=(entry("a", "d", B, version=5), entry("a", "d", A, version=2)), version=5
    )
    found = PolicyIndex.from_snapshot(snap, confirmed_at=NOW).entry("a", "d")
    assert found is not None and found.access is B


def test_empty_index_is_not_loaded() -> None:
    index = PolicyIndex.empty("c9")
    assert (index.loaded, index.version, index.cluster_id, index.device_count()) == (
        False,
        0,
        "c9",
        0,
    )


# --- pushes ------------------------------------------------------------------------------


def test_next_version_push_applies_and_advances() -> None:
    index = base_index()
    result = index.apply_push(device_push(11, "alice", "dev1", B))
    assert (result.changed, result.gap, result.index.version) == (True, False, 11)
    assert result.index.entry("alice", "dev1").access is B  # type: ignore[union-attr]
    assert index.entry("alice", "dev1").access is A  # type: ignore[union-attr]  # old unchanged


def test_duplicate_push_changes_nothing() -> None:
    first = base_index().apply_push(device_push(11, "alice", "dev1", B)).index
    again = first.apply_push(device_push(11, "alice", "dev1", B))
    assert (again.changed, again.gap) == (False, False)
    assert again.index is first


def test_older_push_for_a_newer_key_changes_nothing() -> None:
    index = base_index()  # bob/dev2 is at version 7
    result = index.apply_push(device_push(6, "bob", "dev2", A))
    assert (result.changed, result.gap) == (False, False)
    assert result.index.entry("bob", "dev2").access is B  # type: ignore[union-attr]


def test_late_push_for_another_key_still_applies() -> None:
    # Writers took 11 and 12 and committed 12 first: the delta brought 12, the push for
    # 11 arrives afterwards and must still apply (its key holds nothing newer).
    index = base_index().apply_delta(delta(10, 12, entry("carol", "x", B, version=12)), NOW)
    result = index.apply_push(device_push(11, "dave", "y", Q))
    assert (result.changed, result.gap, result.index.version) == (True, False, 12)
    assert result.index.entry("dave", "y").access is Q  # type: ignore[union-attr]


def test_gap_is_reported_applied_per_key_and_closed_by_later_pushes() -> None:
    index = base_index()
    ahead = index.apply_push(device_push(13, "carol", "x", B))
    assert (ahead.changed, ahead.gap, ahead.index.version) == (True, True, 10)
    assert ahead.index.entry("carol", "x") is not None
    eleven = ahead.index.apply_push(device_push(11, "dave", "y", A))
    assert (eleven.gap, eleven.index.version) == (False, 11)
    twelve = eleven.index.apply_push(device_push(12, "erin", "z", A))
    assert twelve.index.version == 13  # 13 was already applied out of order


def test_gap_closed_by_delta() -> None:
    ahead = base_index().apply_push(device_push(13, "carol", "x", B)).index
    caught_up = ahead.apply_delta(delta(10, 13, entry("carol", "x", B, version=13)), NOW + 5)
    assert caught_up.version == 13
    assert caught_up.confirmed_at == NOW + 5


def test_settings_push_replaces_settings_and_recompiles_rules() -> None:
    new_settings = ClusterSettings(
        rules=(rule("r2", RuleField.USER_AGENT, "Bad*", B),), blocked_users=("zed",)
    )
    result = base_index().apply_push(PushChange(cluster_id="c1", version=11, settings=new_settings))
    assert result.changed and result.index.version == 11
    assert [c.rule.id for c in result.index.rules] == ["r2"]
    assert result.index.blocked_users == frozenset({"zed"})
    older = result.index.apply_push(
        PushChange(cluster_id="c1", version=11, settings=ClusterSettings())
    )
    assert not older.changed


def test_credential_push() -> None:
    index = base_index()
    push = PushChange(
        cluster_id="c1", version=11, credentials=(credential("alice", version=11, enabled=False),)
    )
    result = index.apply_push(push)
    assert result.changed
    assert result.index.credential("alice").enabled is False  # type: ignore[union-attr]
    stale = result.index.apply_push(
        PushChange(cluster_id="c1", version=4, credentials=(credential("alice", version=4),))
    )
    assert not stale.changed


def test_resync_and_pong_ahead_report_a_gap() -> None:
    index = base_index()
    assert index.apply_push(PushResync(cluster_id="c1", version=10)).gap is False
    assert index.apply_push(PushResync(cluster_id="c1", version=12)).gap is True
    pong = PushPong(cluster_id="c1", version=10, server_time=T0)
    result = index.apply_push(pong)
    assert (result.changed, result.gap, result.index) == (False, False, index)
    assert index.apply_push(PushPong(cluster_id="c1", version=11, server_time=T0)).gap


def test_push_with_confirmation_refreshes_confirmed_at() -> None:
    pong = PushPong(cluster_id="c1", version=10, server_time=T0)
    result = base_index().apply_push(pong, confirmed_at=NOW + 60)
    assert result.index.confirmed_at == NOW + 60


def test_revoked_changes_nothing_here() -> None:
    index = base_index()
    result = index.apply_push(PushRevoked(cluster_id="c1"))
    assert (result.changed, result.gap, result.index) == (False, False, index)


def test_push_onto_an_empty_index_asks_for_a_fetch() -> None:
    result = PolicyIndex.empty().apply_push(device_push(1, "a", "d", A))
    assert (result.changed, result.gap, result.index.loaded) == (False, True, False)


def test_push_for_another_cluster_is_refused() -> None:
    other = PushChange(cluster_id="c2", version=11, devices=(entry("a", "d", A, version=11),))
    with pytest.raises(PolicyMismatchError):
        base_index().apply_push(other)


def test_many_pushes_fold_the_overlay_and_stay_correct() -> None:
    index = base_index()
    count = layered_map.OVERLAY_LIMIT * 2 + 7
    for n in range(count):
        index = index.apply_push(device_push(11 + n, f"u{n}", "d", A)).index
    assert index.version == 10 + count
    assert index.device_count() == 2 + count
    assert all(index.entry(f"u{n}", "d") is not None for n in range(count))
    assert index.entry("alice", "dev1") is not None


# --- deltas ------------------------------------------------------------------------------


def test_delta_applies_entries_settings_and_version() -> None:
    index = base_index()
    new = index.apply_delta(
        delta(
            10,
            14,
            entry("alice", "dev1", Q, version=14),
            entry("bob", "dev2", A, version=5),  # older than held 7: ignored
            settings=ClusterSettings(test_mode=True),
        ),
        NOW + 1,
    )
    assert new.version == 14 and new.settings.test_mode
    assert new.entry("alice", "dev1").access is Q  # type: ignore[union-attr]
    assert new.entry("bob", "dev2").access is B  # type: ignore[union-attr]
    assert new.confirmed_at == NOW + 1


def test_delta_that_skips_versions_is_refused() -> None:
    with pytest.raises(PolicyMismatchError, match="fetch the snapshot"):
        base_index().apply_delta(delta(11, 14), NOW)


def test_delta_for_another_cluster_or_without_snapshot_is_refused() -> None:
    with pytest.raises(PolicyMismatchError):
        base_index().apply_delta(delta(10, 11, cluster_id="c2"), NOW)
    with pytest.raises(PolicyMismatchError):
        PolicyIndex.empty().apply_delta(delta(0, 1), NOW)


# --- snapshots over a live index, persistence --------------------------------------------


def test_snapshot_replaces_but_keeps_newer_pushes() -> None:
    index = base_index().apply_push(device_push(11, "carol", "x", B)).index
    snap = snapshot(version=10, devices=(entry("alice", "dev1", Q, version=9),))
    new = index.apply_snapshot(snap, NOW + 2)
    assert new.version == 11
    assert new.entry("carol", "x") is not None  # pushed after the snapshot was read
    assert new.entry("bob", "dev2") is None  # gone from the snapshot
    assert new.entry("alice", "dev1").access is Q  # type: ignore[union-attr]


def test_snapshot_onto_an_empty_index() -> None:
    new = PolicyIndex.empty().apply_snapshot(snapshot(version=3), NOW)
    assert new.loaded and new.version == 3 and new.cluster_id == "c1"


def test_with_confirmation_only_moves_forward() -> None:
    index = base_index()
    assert index.with_confirmation(NOW + 10).confirmed_at == NOW + 10
    assert index.with_confirmation(NOW - 10).confirmed_at == NOW


def test_to_snapshot_round_trip_through_json() -> None:
    index = base_index().apply_push(device_push(11, "carol", "x", B)).index
    snap = index.to_snapshot()
    assert snap.generated_at == datetime.fromtimestamp(NOW, UTC)
    reloaded = PolicySnapshot.model_validate_json(snap.model_dump_json())
    again = PolicyIndex.from_snapshot(reloaded, reloaded.generated_at.timestamp())
    assert again.version == 11 and again.confirmed_at == NOW
    assert sorted(e.key for e in again.devices()) == sorted(e.key for e in index.devices())
    assert [c.user for c in again.credentials()] == ["alice"]
    assert again.settings == index.settings
    assert again.to_snapshot() == snap


def test_snapshot_newer_than_all_held_drops_what_it_does_not_list() -> None:
    # Nothing held is newer than the snapshot, so the snapshot is taken as it is.
    index = base_index().apply_push(device_push(11, "carol", "x", B)).index
    snap = snapshot(version=12, devices=(entry("alice", "dev1", Q, version=12),))
    new = index.apply_snapshot(snap, NOW + 2)
    assert new.version == 12
    assert [e.key for e in new.devices()] == [entry("alice", "dev1").key]
    assert new.entry("alice", "dev1").access is Q  # type: ignore[union-attr]
    assert new.credential("alice") is None


# --- what one index holds beyond another (the workers' delta) ----------------------------


def test_changes_since_lists_new_and_reversioned_entries_and_credentials() -> None:
    before = base_index().apply_push(device_push(11, "carol", "x", B)).index  # an overlay
    after = before.apply_push(device_push(12, "alice", "dev1", Q)).index
    after = after.apply_push(device_push(13, "dave", "y", A)).index
    after = after.apply_push(
        PushChange(cluster_id="c1", version=14, credentials=(credential("alice", version=14),))
    ).index
    changes = after.changes_since(before)
    assert changes is not None
    devices, credentials = changes
    assert sorted((e.user, e.device_id, e.version) for e in devices) == [
        ("alice", "dev1", 12),
        ("dave", "y", 13),
    ]
    assert [(c.user, c.version) for c in credentials] == [("alice", 14)]
    assert before.changes_since(before) == ((), ())


def test_changes_since_is_none_when_a_key_is_gone() -> None:
    before = base_index().apply_push(device_push(11, "carol", "x", B)).index
    without_carol = base_index()  # holds every key but the pushed one
    assert without_carol.changes_since(before) is None
    no_credentials = PolicyIndex.from_snapshot(
        snapshot(version=10, devices=tuple(base_index().devices())), NOW
    )
    assert no_credentials.changes_since(base_index()) is None
    credentials = base_index().to_snapshot().credentials
    assert base_index().changes_since(no_credentials) == ((), credentials)


@pytest.mark.parametrize("slice_size", [1, 2, 7, 1_000])
def test_changes_worked_out_in_slices_are_the_changes_worked_out_at_once(
    slice_size: int,
) -> None:
    before = (
        PolicyIndex.from_snapshot(
            snapshot(
                version=10,
                devices=tuple(entry(f"u{i}", f"d{i}", A, version=i + 1) for i in range(9)),
            ),
            NOW,
        )
        .apply_push(device_push(11, "u3", "d3", B))
        .index
    )  # an overlay
    after = before.apply_push(device_push(12, "u5", "d5", B)).index
    after = after.apply_push(device_push(13, "new", "dev", A)).index
    steps = after.changes_in_slices(before, slice_size)
    taken = 0
    while True:
        try:
            next(steps)
            taken += 1
        except StopIteration as done:
            known = done.value
            break
    # A step per slice of the 9 old keys (still there?), then of the 10 entries.
    assert taken == -(-9 // slice_size) - (-10 // slice_size)
    assert known.changes == after.changes_since(before)
    assert sorted((e.user, e.version) for e in known.changes[0]) == [("new", 13), ("u5", 12)]
    assert known.matches(after, before) and not known.matches(before, after)
    gone = finish(base_index().changes_in_slices(before, slice_size))
    assert gone.changes is None and gone.changes == base_index().changes_since(before)


def test_changes_worked_out_ahead_stand_only_for_the_tables_they_compared() -> None:
    before = base_index()
    after = before.apply_push(device_push(11, "carol", "x", B)).index
    known = finish(after.changes_in_slices(before))
    assert known.changes is not None
    # A snapshot apply that kept nothing newer shares the tables: the answer is reused
    # (a stand-in answer shows it was not worked out again).
    stand_in = dataclasses.replace(known, changes=((), ()))
    assert after.with_confirmation(NOW + 1).changes_since(before, stand_in) == ((), ())
    # A push meanwhile, on either side, makes other tables: worked out again.
    pushed = after.apply_push(device_push(12, "dave", "y", B)).index
    assert pushed.changes_since(before, stand_in) == pushed.changes_since(before)
    assert [e.user for e in pushed.changes_since(before, stand_in)[0]] == ["carol", "dave"]  # type: ignore[index]
    moved = before.apply_push(device_push(12, "alice", "dev1", B)).index
    assert after.changes_since(moved, stand_in) == after.changes_since(moved) != ((), ())


def test_an_index_built_in_slices_is_the_index_built_at_once() -> None:
    snap = snapshot(
        version=30,
        devices=(
            *(entry(f"u{i}", f"d{i}", B, version=i + 1) for i in range(25)),
            entry("U3", "D3", A, version=26),  # the same key again, newer: it wins
        ),
        credentials=(credential("alice", version=4),),
    )
    steps, count = PolicyIndex.build_in_slices(snap, NOW, slice_size=4), 0
    while True:
        try:
            next(steps)
            count += 1
        except StopIteration as done:
            sliced: PolicyIndex = done.value
            break
    whole = PolicyIndex.from_snapshot(snap, NOW)
    assert count == 6  # 26 devices in slices of 4: 7 slices, a step between two
    assert sliced.digest() == whole.digest() and sliced.version == whole.version == 30
    assert sliced.entry("u3", "d3").access is A  # type: ignore[union-attr]
    assert sliced.device_count() == 25 and sliced.credential("alice") is not None
    index = base_index()
    assert (
        index.apply_snapshot(snap, NOW, sliced).digest() == index.apply_snapshot(snap, NOW).digest()
    )
