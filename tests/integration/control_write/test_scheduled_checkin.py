"""The scheduled check-in (EventBridge -> Lambda): a phone that stops checking in is
found, queued, re-evaluated and blocked without anyone acting."""

from __future__ import annotations

import json

from lambdas.domain.compliance import CompliancePolicy
from lambdas.handlers import scheduled_checkin
from seg_contract import Access, EntrySource
from tests.support.events import LambdaContext, scheduled_event

from .conftest import World, device_updates


def test_stale_checkin_is_queued_and_then_blocked(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.connect(credential, "node-b", "conn-b")
    world.enroll("mdm-silent", "alice", "dev1")
    world.enroll("mdm-fresh", "bob", "dev2")
    world.drain()

    world.clock.advance(hours=20)
    world.checkin("mdm-fresh")
    world.drain()
    world.clock.advance(hours=5)  # alice: 25 h without a check-in; bob: 5 h

    result = scheduled_checkin.handler(scheduled_event(), LambdaContext())
    assert result == {"stale": 1, "queued": 1, "clusters_seeded": 0}
    (queued,) = world.receive(visibility_timeout=0)
    body = json.loads(queued["Body"])
    assert (body["type"], body["mdm_device_id"], body["reason"]) == (
        "evaluate_device",
        "mdm-silent",
        "stale_checkin",
    )
    assert queued["Attributes"]["MessageGroupId"] == "dev-mdm-silent"

    world.drain()
    entry = world.entry(cluster_id, "alice", "dev1")
    assert (entry.access, entry.source, entry.reason) == (
        Access.BLOCK,
        EntrySource.COMPLIANCE,
        "non-compliant: last check-in too old",
    )
    assert world.entry(cluster_id, "bob", "dev2").access is Access.ALLOW
    for connection_id in ("conn-a", "conn-b"):
        assert device_updates(world.posted(connection_id))[-1]["entry"]["access"] == "block"


def test_already_blocked_and_unenrolled_devices_are_not_requeued(world: World) -> None:
    world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    world.enroll("mdm-2", "bob", "dev2")
    world.drain()
    world.clock.advance(days=2)
    world.mdm({"type": "unenrollment", "mdm_device_id": "mdm-2"})
    world.drain()

    assert scheduled_checkin.handler(scheduled_event(), LambdaContext()) == {
        "stale": 1,
        "queued": 1,
        "clusters_seeded": 0,
    }
    world.drain()  # mdm-1 is now non-compliant (stale)
    world.clock.advance(minutes=15)
    assert scheduled_checkin.handler(scheduled_event(), LambdaContext()) == {
        "stale": 1,
        "queued": 0,
        "clusters_seeded": 0,
    }


def test_the_sweep_follows_the_configured_check_in_age(world: World) -> None:
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()
    world.clusters.put_compliance_policy(
        CompliancePolicy(max_checkin_age_s=3600), updated_at=world.clock()
    )
    world.clock.advance(minutes=59)
    assert scheduled_checkin.handler(scheduled_event(), LambdaContext())["queued"] == 0
    world.clock.advance(minutes=2)
    assert scheduled_checkin.handler(scheduled_event(), LambdaContext())["queued"] == 1
