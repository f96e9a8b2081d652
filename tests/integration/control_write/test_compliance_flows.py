"""The seed's single-device update flows, end to end through the compliance reader:
MDM event or console override -> compliance queue -> reader -> entry stored with the
cluster's next version -> pushed to every node of every cluster."""

from __future__ import annotations

from seg_contract import Access, EntrySource, PushChange

from .conftest import World, device_updates


def _two_node_cluster(world: World) -> str:
    cluster_id, credential = world.cluster("hq")
    assert world.connect(credential, "node-a", "conn-a") == {"statusCode": 200}
    assert world.connect(credential, "node-b", "conn-b") == {"statusCode": 200}
    return cluster_id


def test_enrollment_allows_the_device_and_pushes_to_both_nodes(world: World) -> None:
    cluster_id = _two_node_cluster(world)

    receipt = world.enroll("mdm-1", "CORP\\Alice", "ApplF17XYZ")
    assert receipt.status == "queued"
    assert world.drain() == 1

    entry = world.entry(cluster_id, "alice", "applf17xyz")
    assert (entry.access, entry.source, entry.reason) == (
        Access.ALLOW,
        EntrySource.COMPLIANCE,
        "compliant",
    )
    assert entry.version == 1
    assert entry.mdm_device_id == "mdm-1"
    for connection_id in ("conn-a", "conn-b"):
        (push,) = world.posted(connection_id)
        parsed = PushChange.model_validate(push)
        assert parsed.cluster_id == cluster_id
        assert parsed.version == 1
        assert parsed.devices == (entry,)
    record = world.devices.get("mdm-1")
    assert record is not None and record.compliance_state.value == "compliant"


def test_compromised_checkin_blocks_and_pushes(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()

    world.clock.advance(hours=2)
    world.checkin("mdm-1", compromised=True)
    world.drain()

    entry = world.entry(cluster_id, "alice", "dev1")
    assert entry.access is Access.BLOCK
    assert entry.source is EntrySource.COMPLIANCE
    assert entry.reason == "non-compliant: compromised (jailbroken or rooted)"
    assert entry.version == 2
    for connection_id in ("conn-a", "conn-b"):
        pushes = device_updates(world.posted(connection_id))
        assert [(p["version"], p["entry"]["access"]) for p in pushes] == [
            (1, "allow"),
            (2, "block"),
        ]


def test_unenrollment_blocks(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.enroll("mdm-1", "alice", "dev1")
    world.clock.advance(minutes=5)
    world.mdm({"type": "unenrollment", "mdm_device_id": "mdm-1"})
    world.drain()

    entry = world.entry(cluster_id, "alice", "dev1")
    assert (entry.access, entry.source) == (Access.BLOCK, EntrySource.UNENROLLED)
    assert device_updates(world.posted("conn-b"))[-1]["entry"]["source"] == "unenrolled"


def test_manual_block_is_pushed_and_clear_restores_compliance(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()

    world.clock.advance(minutes=1)
    world.override("ALICE", "DEV1", "block", "reported stolen")
    world.drain()
    blocked = world.entry(cluster_id, "alice", "dev1")
    assert (blocked.access, blocked.source) == (Access.BLOCK, EntrySource.MANUAL)
    assert blocked.reason == "manual block by admin@corp.example: reported stolen"
    assert device_updates(world.posted("conn-a"))[-1]["entry"] == blocked.model_dump(mode="json")

    world.clock.advance(minutes=1)
    world.override("alice", "dev1", "clear")
    world.drain()
    cleared = world.entry(cluster_id, "alice", "dev1")
    assert (cleared.access, cleared.source) == (Access.ALLOW, EntrySource.COMPLIANCE)
    assert cleared.version > blocked.version


def test_override_for_a_device_the_mdm_never_enrolled_still_gets_an_entry(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.override("bob", "androidc1", "allow", "exec's personal phone")
    world.drain()
    entry = world.entry(cluster_id, "bob", "androidc1")
    assert (entry.access, entry.source, entry.mdm_device_id) == (
        Access.ALLOW,
        EntrySource.MANUAL,
        "",
    )

    world.clock.advance(minutes=1)
    world.override("bob", "androidc1", "clear")
    world.drain()
    # No MDM record and no override: the cluster's unknown-device action (block).
    assert world.entry(cluster_id, "bob", "androidc1").access is Access.BLOCK


def test_every_eas_id_of_a_device_gets_an_entry_in_every_cluster(world: World) -> None:
    hq = _two_node_cluster(world)
    branch, credential = world.cluster("branch")
    world.connect(credential, "node-x", "conn-x")

    world.enroll("mdm-1", "alice", "phone1", "mailapp2")
    world.drain()

    for cluster_id in (hq, branch):
        for device_id in ("phone1", "mailapp2"):
            assert world.entry(cluster_id, "alice", device_id).access is Access.ALLOW
    # Each node gets only its own cluster's pushes.
    assert {p["cluster_id"] for p in world.posted("conn-a")} == {hq}
    assert {p["cluster_id"] for p in world.posted("conn-x")} == {branch}
    assert len(device_updates(world.posted("conn-x"))) == 2


def test_reenrollment_with_a_new_device_id_blocks_the_old_one(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.enroll("mdm-1", "alice", "oldid")
    world.drain()

    world.clock.advance(days=1)
    world.enroll("mdm-1", "alice", "newid")  # wiped and re-enrolled
    world.drain()

    assert world.entry(cluster_id, "alice", "newid").access is Access.ALLOW
    old = world.entry(cluster_id, "alice", "oldid")
    assert (old.access, old.source) == (Access.BLOCK, EntrySource.UNENROLLED)
    record = world.devices.get("mdm-1")
    assert record is not None and record.retired_keys == frozenset()


def test_manual_override_of_a_secondary_eas_id_finds_its_device(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.enroll("mdm-1", "alice", "phone1", "mailapp2")
    world.checkin("mdm-1", encrypted=False)
    world.drain()
    assert world.entry(cluster_id, "alice", "mailapp2").access is Access.BLOCK

    world.clock.advance(minutes=1)
    world.override("alice", "mailapp2", "allow")
    world.drain()
    world.clock.advance(minutes=1)
    world.override("alice", "mailapp2", "clear")
    world.drain()
    entry = world.entry(cluster_id, "alice", "mailapp2")
    # Back to the device's compliance (not the unknown-device action).
    assert (entry.source, entry.reason) == (
        EntrySource.COMPLIANCE,
        "non-compliant: storage not encrypted",
    )
    assert entry.mdm_device_id == "mdm-1"


def test_without_clusters_evaluation_still_records_compliance(world: World) -> None:
    world.enroll("mdm-1", "alice", "dev1")
    world.checkin("mdm-1", passcode=False)
    assert world.drain() == 2
    record = world.devices.get("mdm-1")
    assert record is not None
    assert record.compliance_state.value == "non_compliant"
    assert record.compliance_reasons == ("no_passcode",)


def test_an_eas_id_claimed_by_another_device_follows_the_new_owner(world: World) -> None:
    cluster_id = _two_node_cluster(world)
    world.enroll("mdm-old", "alice", "shared1")
    world.drain()
    world.clock.advance(hours=1)
    world.enroll("mdm-new", "alice", "shared1")  # the same phone, enrolled afresh
    world.drain()
    world.clock.advance(hours=1)
    world.checkin("mdm-old", compromised=True)  # the stale record reports in
    world.drain()

    entry = world.entry(cluster_id, "alice", "shared1")
    assert (entry.access, entry.mdm_device_id) == (Access.ALLOW, "mdm-new")
