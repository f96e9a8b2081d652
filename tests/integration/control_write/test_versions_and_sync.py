"""Policy versions: newest state wins whatever the order or repetition of updates, and
a delta since N holds exactly the changes after N."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lambdas.adapters.apigw_connections import ApiGatewayConnections
from lambdas.usecases.errors import InvalidInput, NotFound
from lambdas.usecases.policy_changes import change_credential, change_settings
from lambdas.usecases.policy_sync import DeltaTooOld, build_delta, build_snapshot
from seg_contract import Access, ClusterSettings, EntrySource

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


def test_an_older_version_never_overwrites_a_newer_entry(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()
    world.checkin("mdm-1", compromised=True)
    world.drain()
    current = world.entry(cluster_id, "alice", "dev1")
    assert current.version == 2

    stale = current.model_copy(update={"version": 1, "access": Access.ALLOW})
    assert world.entries.put_device_entry(cluster_id, stale) is False
    same = current.model_copy(update={"access": Access.ALLOW})
    assert world.entries.put_device_entry(cluster_id, same) is False
    assert world.entry(cluster_id, "alice", "dev1") == current


def test_delta_since_n_holds_exactly_the_changes_after_n(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")  # v1
    world.enroll("mdm-2", "bob", "dev2")  # v2
    world.enroll("mdm-3", "carol", "dev3")  # v3
    world.drain()
    world.checkin("mdm-1", passcode=False)  # v4
    world.drain()

    delta = build_delta(
        cluster_id, 2, clusters=world.clusters, entries=world.entries, now=world.clock()
    )
    assert (delta.since_version, delta.version) == (2, 4)
    assert [(d.user, d.version, d.access) for d in delta.devices] == [
        ("carol", 3, Access.ALLOW),
        ("alice", 4, Access.BLOCK),
    ]
    assert delta.settings is None  # settings unchanged since 2

    empty = build_delta(
        cluster_id, 4, clusters=world.clusters, entries=world.entries, now=world.clock()
    )
    assert (empty.version, empty.devices) == (4, ())

    snapshot = build_snapshot(
        cluster_id, clusters=world.clusters, entries=world.entries, now=world.clock()
    )
    assert snapshot.version == 4
    assert [(d.user, d.version) for d in snapshot.devices] == [
        ("alice", 4),
        ("bob", 2),
        ("carol", 3),
    ]
    assert snapshot.settings == ClusterSettings()


def test_settings_and_credentials_take_versions_and_are_pushed(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # v1

    settings = ClusterSettings(unknown_device_action=Access.QUARANTINE, test_mode=True)
    version, report = change_settings(
        cluster_id,
        settings,
        clusters=world.clusters,
        connections=world.connections,
        poster=world_poster(world),
    )
    assert (version, report.delivered) == (2, 1)
    cred = change_credential(
        cluster_id,
        "CORP\\Alice",
        enabled=True,
        pw1_hashes=("scrypt$16384$8$1$c2FsdA==$aGFzaA==",),
        sealed_pw2="c2VhbGVk",
        clusters=world.clusters,
        entries=world.entries,
        connections=world.connections,
        poster=world_poster(world),
        now=world.clock(),
    )
    assert (cred.user, cred.version) == ("alice", 3)
    assert [
        (p["type"], len(p["devices"]), p["settings"] is not None, len(p["credentials"]))
        for p in world.posted("conn-a")
    ] == [("change", 1, False, 0), ("change", 0, True, 0), ("change", 0, False, 1)]

    delta = build_delta(
        cluster_id, 1, clusters=world.clusters, entries=world.entries, now=world.clock()
    )
    assert delta.version == 3
    assert delta.settings == settings
    assert delta.credentials == (cred,)
    assert delta.devices == ()
    snapshot = build_snapshot(
        cluster_id, clusters=world.clusters, entries=world.entries, now=world.clock()
    )
    assert (snapshot.version, snapshot.settings, snapshot.credentials) == (3, settings, (cred,))


def test_delta_refused_when_purged_or_ahead(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    world.enroll("mdm-2", "bob", "dev2")
    world.drain()
    world.clusters.raise_purge_watermark(cluster_id, 2)

    with pytest.raises(DeltaTooOld) as purged:
        build_delta(
            cluster_id, 1, clusters=world.clusters, entries=world.entries, now=world.clock()
        )
    assert purged.value.detail == "delta since 1 is no longer available; fetch the full snapshot"
    with pytest.raises(DeltaTooOld, match="ahead"):
        build_delta(
            cluster_id, 9, clusters=world.clusters, entries=world.entries, now=world.clock()
        )
    with pytest.raises(InvalidInput):
        build_delta(
            cluster_id, -1, clusters=world.clusters, entries=world.entries, now=world.clock()
        )
    with pytest.raises(NotFound):
        build_delta("c-nope", 0, clusters=world.clusters, entries=world.entries, now=world.clock())
    assert (
        build_delta(
            cluster_id, 2, clusters=world.clusters, entries=world.entries, now=world.clock()
        ).devices
        == ()
    )


def test_unknown_device_action_follows_each_clusters_settings(world: World) -> None:
    strict, _ = world.cluster("strict")
    lenient, _ = world.cluster("lenient")
    change_settings(
        lenient,
        ClusterSettings(unknown_device_action=Access.ALLOW),
        clusters=world.clusters,
        connections=world.connections,
        poster=world_poster(world),
    )
    world.override("dave", "tablet9", "block")
    world.drain()
    world.clock.advance(minutes=1)
    world.override("dave", "tablet9", "clear")
    world.drain()
    assert world.entry(strict, "dave", "tablet9").access is Access.BLOCK
    allowed = world.entry(lenient, "dave", "tablet9")
    assert (allowed.access, allowed.source) == (Access.ALLOW, EntrySource.COMPLIANCE)


def world_poster(world: World) -> ApiGatewayConnections:
    return ApiGatewayConnections("", world.aws.apigw)
