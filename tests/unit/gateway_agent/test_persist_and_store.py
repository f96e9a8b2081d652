"""The policy store and op replay (the worker path); the journal of signed input is
``test_policy_journal``."""

from __future__ import annotations

import json

import pytest

from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore, compact_op
from onprem_gateway.core.policy_index import PolicyMismatchError
from seg_contract import Access, ClusterSettings, PolicyDelta
from tests.unit.gateway_agent.helpers import delta, entry, push, signed_snapshot, snapshot


def test_store_swaps_and_notifies_on_every_change() -> None:
    store = PolicyStore()
    seen: list[str] = []
    store.subscribe(lambda op, index: seen.append(f"{op.kind}:{index.version}"))
    store.apply_snapshot(snapshot(), 10.0)
    result = store.apply_push(push(entry("alice", "dev1", Access.BLOCK, 3)))
    assert result.changed and not result.gap
    assert store.apply_push(push(entry("alice", "dev1", Access.BLOCK, 3))).changed is False
    store.apply_delta(delta(3, 4, entry("carol", "dev3", Access.ALLOW, 4)), 20.0)
    store.confirm(30.0)
    store.confirm(30.0)  # nothing new: no notification
    assert seen == ["snapshot:2", "push:3", "delta:4", "confirm:4"]
    assert store.current().entry("alice", "dev1").access is Access.BLOCK  # type: ignore[union-attr]


def test_a_snapshot_of_another_cluster_replaces_the_policy() -> None:
    store = PolicyStore()
    store.apply_snapshot(snapshot(), 1.0)
    store.apply_snapshot(snapshot(1, entry("zed", "d", Access.ALLOW, 1), cluster="c2"), 2.0)
    assert store.current().cluster_id == "c2" and store.current().version == 1


def test_a_delta_that_does_not_cover_the_applied_version_is_refused() -> None:
    store = PolicyStore()
    store.apply_snapshot(snapshot(), 1.0)
    with pytest.raises(PolicyMismatchError):
        store.apply_delta(delta(5, 6), 2.0)


def test_a_replica_replaying_the_ops_over_the_wire_ends_identical() -> None:
    agent, worker = PolicyStore(), PolicyStore()
    wire: list[str] = []
    agent.subscribe(lambda op, index: wire.append(op.to_lines()))
    agent.apply_snapshot(snapshot(), 1.0)
    agent.apply_push(push(entry("alice", "dev1", Access.QUARANTINE, 4)))  # gap: 3 missing
    agent.apply_delta(delta(2, 4, entry("dan", "d9", Access.ALLOW, 3)), 2.0)
    agent.confirm(3.0)
    for lines in wire:
        header, _, body = lines.partition(b"\n")
        worker.apply_op(PolicyOp.from_lines(json.loads(header), body or None))
    a, w = agent.current(), worker.current()
    assert (a.version, a.confirmed_at) == (w.version, w.confirmed_at) == (4, 3.0)
    assert a.to_snapshot() == w.to_snapshot()


def test_the_signed_input_of_an_op_never_crosses_to_a_worker() -> None:
    agent = PolicyStore()
    ops: list[PolicyOp] = []
    agent.subscribe(lambda op, index: ops.append(op))
    signed = signed_snapshot(snapshot(), 1.0)
    agent.apply_snapshot(snapshot(), 1.0, signed)
    (op,) = ops
    assert op.signed is signed
    header, _, body = op.to_lines().partition(b"\n")
    assert b"statement" not in op.to_lines() and signed.signature_token.encode() not in body
    assert PolicyOp.from_lines(json.loads(header), body).signed is None


def test_an_unknown_op_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy op"):
        PolicyOp.from_lines({"op": "explode"}, None)
    with pytest.raises(ValueError, match="without a body"):
        PolicyOp.from_lines({"op": "push"}, None)


def test_a_refreshed_snapshot_reaches_replicas_as_the_delta_it_amounts_to() -> None:
    agent, worker = PolicyStore(), PolicyStore()
    agent.apply_snapshot(snapshot(), 1.0)
    worker.apply_snapshot(snapshot(), 1.0)
    before = agent.current()
    refreshed = snapshot(
        4,
        entry("alice", "dev1", Access.ALLOW, 1),  # unchanged
        entry("bob", "dev2", Access.ALLOW, 3),  # changed
        entry("carol", "dev3", Access.BLOCK, 4),  # new
    )
    agent.apply_snapshot(refreshed, 2.0)
    op = compact_op(PolicyOp("snapshot", refreshed, 2.0), before, agent.current())
    assert op.kind == "delta"
    assert isinstance(op.body, PolicyDelta)
    assert [e.user for e in op.body.devices] == ["bob", "carol"]
    worker.apply_op(op)
    assert worker.current().to_snapshot() == agent.current().to_snapshot()


def test_a_snapshot_that_drops_an_entry_is_sent_whole() -> None:
    agent = PolicyStore()
    agent.apply_snapshot(snapshot(), 1.0)
    before = agent.current()
    smaller = snapshot(3, entry("alice", "dev1", Access.ALLOW, 1))
    agent.apply_snapshot(smaller, 2.0)
    assert (
        compact_op(PolicyOp("snapshot", smaller, 2.0), before, agent.current()).kind == "snapshot"
    )


def test_a_replace_drops_what_the_snapshot_lacks_and_keeps_pushes_that_arrived_meanwhile() -> None:
    store = PolicyStore()
    store.apply_snapshot(snapshot(2, entry("bob", "dev2", Access.ALLOW, 999)), 1.0)  # edited
    seen: list[str] = []
    store.subscribe(lambda op, index: seen.append(f"{op.kind}:{index.version}"))
    store.begin_replace()
    # While the snapshot is fetched, the control plane pushes version 3.
    store.apply_push(push(entry("carol", "dev3", Access.BLOCK, 3)))
    fetched = snapshot(2)  # read before version 3 was committed
    index = store.replace_with_snapshot(fetched, 5.0)
    assert index.entry("bob", "dev2").access is Access.BLOCK  # type: ignore[union-attr]
    assert index.entry("carol", "dev3") is not None and index.version == 3
    assert index.exact and index.confirmed_at == 5.0
    assert seen == ["push:3", "replace:2", "push:3"]
    # Recording ends with the replace.
    store.apply_push(push(entry("dan", "dev4", Access.ALLOW, 4)))
    assert store.replace_with_snapshot(snapshot(4, entry("dan", "dev4", Access.ALLOW, 4)), 6.0)
    assert store.current().entry("carol", "dev3") is None


def test_a_replica_replays_a_replace_exactly() -> None:
    agent, worker = PolicyStore(), PolicyStore()
    wire: list[bytes] = []
    agent.subscribe(lambda op, index: wire.append(op.to_lines()))
    agent.apply_snapshot(snapshot(2, entry("bob", "dev2", Access.ALLOW, 999)), 1.0)
    agent.begin_replace()
    agent.apply_push(push(entry("carol", "dev3", Access.BLOCK, 3)))
    agent.replace_with_snapshot(snapshot(2), 2.0)
    for lines in wire:
        header, _, body = lines.partition(b"\n")
        worker.apply_op(PolicyOp.from_lines(json.loads(header), body or None))
    assert worker.current().to_snapshot() == agent.current().to_snapshot()
    assert worker.current().entry("bob", "dev2").access is Access.BLOCK  # type: ignore[union-attr]


def test_an_abandoned_replace_stops_recording() -> None:
    store = PolicyStore()
    store.apply_snapshot(snapshot(), 1.0)
    store.begin_replace()
    store.abandon_replace()
    store.apply_push(push(entry("carol", "dev3", Access.BLOCK, 3)))
    store.replace_with_snapshot(snapshot(2), 2.0)
    assert store.current().entry("carol", "dev3") is None and store.current().version == 2


def test_a_refreshed_snapshot_with_new_settings_reaches_replicas_with_their_version() -> None:
    agent, worker = PolicyStore(), PolicyStore()
    agent.apply_snapshot(snapshot(), 1.0)
    worker.apply_snapshot(snapshot(), 1.0)
    before = agent.current()
    refreshed = snapshot(3).model_copy(
        update={"settings": ClusterSettings(test_mode=True), "settings_version": 3}
    )
    agent.apply_snapshot(refreshed, 2.0)
    op = compact_op(PolicyOp("snapshot", refreshed, 2.0), before, agent.current())
    assert op.kind == "delta"
    worker.apply_op(op)
    assert worker.current().settings.test_mode and worker.current().settings_version == 3
