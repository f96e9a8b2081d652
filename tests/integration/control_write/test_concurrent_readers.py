"""Two compliance readers working on the same email device at once (the check-in is in
the device's FIFO group, the override in the email device's): the reader that takes the
higher version read the other's input, so the newest state wins whatever the timing."""

from __future__ import annotations

from dataclasses import replace

from lambdas.domain.access import OverrideAction
from lambdas.domain.messages import EvaluateDevice, ManualOverrideRequest
from lambdas.handlers import compliance_reader
from lambdas.usecases.compliance import ComplianceStores, handle_message
from seg_contract import Access, EntrySource

from .conftest import InterleavingDevices, World


def test_an_override_landing_mid_evaluation_is_not_overwritten(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # v1: allow (compliant)
    world.clock.advance(minutes=1)
    world.checkin("mdm-1", compromised=True)  # queued; processed below by reader B
    world.aws.sqs.purge_queue(QueueUrl=world.aws.queues["compliance"])

    stores: ComplianceStores = compliance_reader.function.root()
    override = ManualOverrideRequest(
        user="alice",
        device_id="dev1",
        action=OverrideAction.ALLOW,
        reason="CEO's phone, exception approved",
        actor="admin",
        requested_at=world.clock(),
        request_id="r-1",
    )

    def reader_a() -> None:  # the override, processed while B is between read and write
        outcome = handle_message(override, stores, world.clock())
        assert [e.version for _, e in outcome.written] == [3]

    reader_b_stores = replace(stores, devices=InterleavingDevices(stores.devices, reader_a))
    outcome_b = handle_message(
        EvaluateDevice(mdm_device_id="mdm-1", reason="checkin"), reader_b_stores, world.clock()
    )

    # B took version 2 before A took 3: its (stale, override-less) BLOCK is refused, and
    # version 2 commits empty (and is pushed: it moves the nodes' applied version on).
    assert (outcome_b.refused, outcome_b.written, outcome_b.versions) == (1, [], [(cluster_id, 2)])
    entry = world.entry(cluster_id, "alice", "dev1")
    assert (entry.access, entry.source, entry.version) == (Access.ALLOW, EntrySource.MANUAL, 3)
    assert [(p["version"], len(p["devices"])) for p in world.posted("conn-a")] == [
        (1, 1),
        (3, 1),
        (2, 0),
    ]
    cluster = world.clusters.get_cluster(cluster_id)
    assert cluster is not None and cluster.committed_version == 3
