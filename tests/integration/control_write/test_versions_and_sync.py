"""Policy versions: newest state wins whatever the order or repetition of updates, a
stale change is dropped, and a delta since N holds exactly the changes after N."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lambdas.domain.errors import DeltaTooOld, InvalidInput, NotFound
from lambdas.domain.policy_commit import Proposal
from lambdas.usecases.policy_changes import CredentialChange, change_credential, change_settings
from lambdas.usecases.policy_versions import write_version
from seg_contract import Access, ClusterSettings, EntrySource, UserCredential

from .conftest import World


def test_out_of_order_checkins_leave_the_newest_posture(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    newer = world.clock.now + timedelta(hours=2)
    older = world.clock.now + timedelta(hours=1)
    world.mdm(
        {
            "type": "checkin",
            "mdm_device_id": "mdm-1",
            "occurred_at": newer.isoformat(),
            "compromised": True,
            "encrypted": True,
            "passcode": True,
        }
    )
    late = world.mdm(
        {
            "type": "checkin",
            "mdm_device_id": "mdm-1",
            "occurred_at": older.isoformat(),
            "compromised": False,
            "encrypted": True,
            "passcode": True,
        }
    )
    assert (late.status, late.applied) == ("queued", False)
    world.clock.now = newer
    world.drain()
    entry = world.entry(cluster_id, "alice", "dev1")
    assert entry.access is Access.BLOCK
    assert "compromised" in entry.reason


def test_the_same_message_processed_twice_leaves_the_same_state(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    (message,) = world.receive()

    first = world.invoke_reader([message])
    world.clock.advance(seconds=5)
    again = world.invoke_reader([message])  # e.g. redelivered after a timeout

    assert first == again == {"batchItemFailures": []}
    entry = world.entry(cluster_id, "alice", "dev1")
    assert (entry.access, entry.version) == (Access.ALLOW, 2)
    pushes = world.posted("conn-a")
    assert [p["version"] for p in pushes] == [1, 2]
    assert pushes[0]["devices"][0]["access"] == pushes[1]["devices"][0]["access"] == "allow"


def test_a_stale_writers_change_is_dropped_and_its_version_still_commits(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # v1
    slow = world.clusters.next_version(cluster_id)  # v2, held by a slow writer
    world.checkin("mdm-1", compromised=True)
    world.drain()  # v3: block
    current = world.entry(cluster_id, "alice", "dev1")
    assert (current.version, current.access) == (3, Access.BLOCK)

    committed = write_version(
        cluster_id,
        lambda v: Proposal(
            devices=(current.model_copy(update={"version": v, "access": Access.ALLOW}),)
        ),
        stores=world.versions,
        now=world.clock(),
        version=slow,
    )

    assert (committed.version, committed.plan.dropped) == (2, (current.key,))
    assert committed.plan.devices == ()
    assert world.entry(cluster_id, "alice", "dev1") == current
    cluster = world.clusters.get_cluster(cluster_id)
    assert cluster is not None and cluster.committed_version == 3
    pushes = [(p["version"], len(p["devices"])) for p in world.posted("conn-a")]
    assert pushes == [(1, 1), (3, 1), (2, 0)]  # the empty version is pushed too


def test_delta_since_n_holds_exactly_the_changes_after_n(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")  # v1
    world.enroll("mdm-2", "bob", "dev2")  # v2
    world.enroll("mdm-3", "carol", "dev3")  # v3
    world.drain()
    world.checkin("mdm-1", passcode=False)  # v4
    world.drain()

    delta = world.delta(cluster_id, 2)
    assert (delta.since_version, delta.version) == (2, 4)
    assert [(d.user, d.version, d.access) for d in delta.devices] == [
        ("carol", 3, Access.ALLOW),
        ("alice", 4, Access.BLOCK),
    ]
    assert delta.settings is None  # settings unchanged since 2

    empty = world.delta(cluster_id, 4)
    assert (empty.version, empty.devices) == (4, ())

    snapshot = world.snapshot(cluster_id)
    assert snapshot.version == 4
    assert [(d.user, d.version) for d in snapshot.devices] == [
        ("alice", 4),
        ("bob", 2),
        ("carol", 3),
    ]
    assert snapshot.settings == ClusterSettings()


def _add_credential(held: UserCredential | None) -> CredentialChange:
    return CredentialChange(("scrypt$16384$8$1$c2FsdA==$aGFzaA==",), "c2VhbGVk")


def test_settings_and_credentials_take_versions_and_are_pushed(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # v1

    settings = ClusterSettings(unknown_device_action=Access.QUARANTINE, test_mode=True)
    committed = change_settings(cluster_id, settings, stores=world.versions, now=world.clock())
    assert (committed.version, committed.pushes.delivered) == (2, 1)
    cred = change_credential(
        cluster_id, "CORP\\Alice", _add_credential, stores=world.versions, now=world.clock()
    )
    assert (cred.user, cred.version, cred.enabled) == ("alice", 3, True)
    assert [
        (p["type"], len(p["devices"]), p["settings"] is not None, len(p["credentials"]))
        for p in world.posted("conn-a")
    ] == [("change", 1, False, 0), ("change", 0, True, 0), ("change", 0, False, 1)]

    delta = world.delta(cluster_id, 1)
    assert delta.version == 3
    assert (delta.settings, delta.settings_version) == (settings, 2)
    assert delta.credentials == (cred,)
    assert delta.devices == ()
    assert world.delta(cluster_id, 2).settings is None
    snapshot = world.snapshot(cluster_id)
    assert (snapshot.version, snapshot.settings, snapshot.settings_version) == (3, settings, 2)
    assert snapshot.credentials == (cred,)


def test_delta_refused_when_the_log_expired_or_ahead(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    world.enroll("mdm-2", "bob", "dev2")
    world.drain()
    # Version 1's record expired (the table's TTL).
    world.aws.dynamodb.delete_item(
        TableName=world.aws.settings.table("policy_log"),
        Key={"cluster_id": {"S": cluster_id}, "version": {"N": "1"}},
    )

    with pytest.raises(DeltaTooOld) as expired:
        world.delta(cluster_id, 0)
    assert expired.value.detail == "delta since 0 is no longer available; fetch the full snapshot"
    with pytest.raises(DeltaTooOld, match="ahead"):
        world.delta(cluster_id, 9)
    with pytest.raises(InvalidInput):
        world.delta(cluster_id, -1)
    with pytest.raises(NotFound):
        world.delta("c-nope", 0)
    assert [d.user for d in world.delta(cluster_id, 1).devices] == ["bob"]


def test_unknown_device_action_follows_each_clusters_settings(world: World) -> None:
    strict, _ = world.cluster("strict")
    lenient, _ = world.cluster("lenient")
    change_settings(
        lenient,
        ClusterSettings(unknown_device_action=Access.ALLOW),
        stores=world.versions,
        now=world.clock(),
    )
    world.override("dave", "tablet9", "block")
    world.drain()
    world.clock.advance(minutes=1)
    world.override("dave", "tablet9", "clear")
    world.drain()
    assert world.entry(strict, "dave", "tablet9").access is Access.BLOCK
    allowed = world.entry(lenient, "dave", "tablet9")
    assert (allowed.access, allowed.source) == (Access.ALLOW, EntrySource.COMPLIANCE)
