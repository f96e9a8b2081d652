"""A cluster registered after devices enrolled is seeded with every entry, page by page
through the compliance queue."""

from __future__ import annotations

import pytest

from lambdas.handlers import scheduled_checkin
from lambdas.usecases import resync
from lambdas.usecases.policy_sync import build_snapshot
from seg_contract import Access, EntrySource
from tests.support.events import LambdaContext, scheduled_event

from .conftest import World


def test_new_cluster_is_seeded_with_every_device_and_override(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resync, "PAGE_SIZE", 2)  # several pages, several continuations
    old, _ = world.cluster("old")
    for i in range(5):
        world.enroll(f"mdm-{i}", f"user{i}", f"dev{i}")
    world.checkin("mdm-4", compromised=True)
    world.override("guest", "kiosk1", "allow", "lobby kiosk")
    world.override("user1", "dev1", "block")
    world.drain()
    old_version = world.clusters.get_cluster(old).policy_version  # type: ignore[union-attr]

    new, credential = world.cluster("new", seed=False)
    world.connect(credential, "node-a", "conn-a")
    assert world.clusters.get_cluster(new).seeded_at is None  # type: ignore[union-attr]
    request_id = resync.seed_cluster(
        new, queue=world.queue, clusters=world.clusters, now=world.clock()
    )
    assert request_id == f"seed-{new}"
    world.drain()
    assert world.clusters.get_cluster(new).seeded_at == world.clock.now  # type: ignore[union-attr]

    snapshot = build_snapshot(
        new, clusters=world.clusters, entries=world.entries, log=world.log, now=world.clock()
    )
    entries = {(d.user, d.device_id): (d.access, d.source) for d in snapshot.devices}
    assert entries == {
        ("user0", "dev0"): (Access.ALLOW, EntrySource.COMPLIANCE),
        ("user1", "dev1"): (Access.BLOCK, EntrySource.MANUAL),
        ("user2", "dev2"): (Access.ALLOW, EntrySource.COMPLIANCE),
        ("user3", "dev3"): (Access.ALLOW, EntrySource.COMPLIANCE),
        ("user4", "dev4"): (Access.BLOCK, EntrySource.COMPLIANCE),
        ("guest", "kiosk1"): (Access.ALLOW, EntrySource.MANUAL),
    }
    assert len(world.posted("conn-a")) == 6
    # Seeding one cluster takes no versions from the others.
    assert world.clusters.get_cluster(old).policy_version == old_version  # type: ignore[union-attr]


def test_tenant_wide_reevaluation_touches_every_cluster(world: World) -> None:
    a, _ = world.cluster("a")
    b, _ = world.cluster("b")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()
    before = world.entry(a, "alice", "dev1").version
    resync.request_reevaluation(queue=world.queue, reason="policy_change")
    world.drain()
    assert world.entry(a, "alice", "dev1").version > before
    assert world.entry(b, "alice", "dev1").access is Access.ALLOW


def test_the_sweep_seeds_a_cluster_nobody_seeded(world: World) -> None:
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()
    cluster_id, _ = world.cluster("forgotten", seed=False)
    assert world.entries.get_device_entry(cluster_id, "alice", "dev1") is None

    result = scheduled_checkin.handler(scheduled_event(), LambdaContext())
    assert result == {"stale": 0, "queued": 0, "clusters_seeded": 1}
    world.drain()
    assert world.entry(cluster_id, "alice", "dev1").access is Access.ALLOW
    again = scheduled_checkin.handler(scheduled_event(), LambdaContext())
    assert again["clusters_seeded"] == 0
