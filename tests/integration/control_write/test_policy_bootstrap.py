"""A cluster item written in the old shape (before committed versions: a counter, no
``committed_version``, ``digest`` or ``recent_digests``, entries without log records),
with the real adapters on moto and the real WebSocket handlers: it is bootstrapped
without being registered again, and its node converges and is found in sync."""

from __future__ import annotations

import pytest

from lambdas.adapters.dynamodb_policy_entries import credential_item, device_item
from lambdas.domain.errors import DeltaTooOld
from lambdas.domain.policy_log import ABANDON_GRACE
from seg_contract import Access, ClusterSettings, DeviceEntry, UserCredential
from seg_contract.digest import policy_digest
from tests.support.policy import device_entry

from .conftest import T0, World
from .test_convergence import Wire, keepalive, node_of

LEGACY_COUNTER = 6


def make_legacy(world: World, cluster_id: str) -> tuple[list[DeviceEntry], list[UserCredential]]:
    """Turn a registered cluster into one as code from before committed versions left
    it: the counter at 6, settings written by version 2, entries at versions up to 6
    (two of them for one key), and nothing of the committed-version protocol."""
    tables = world.aws.settings
    settings = ClusterSettings(unknown_device_action=Access.ALLOW)
    world.aws.dynamodb.update_item(
        TableName=tables.table("clusters"),
        Key={"cluster_id": {"S": cluster_id}},
        UpdateExpression=(
            "SET policy_version = :counter, settings = :settings, settings_version = :two "
            "REMOVE committed_version, digest, recent_digests"
        ),
        ExpressionAttributeValues={
            ":counter": {"N": str(LEGACY_COUNTER)},
            ":settings": {"S": settings.model_dump_json()},
            ":two": {"N": "2"},
        },
    )
    devices = [
        device_entry("alice", 1, Access.BLOCK, at=T0),
        device_entry("bob", 3, Access.ALLOW, at=T0),
        device_entry("alice", 6, Access.ALLOW, device_id="dev2", at=T0),
    ]
    credentials = [UserCredential(user="carol", version=5, updated_at=T0)]
    for item in [device_item(cluster_id, e) for e in devices] + [
        credential_item(cluster_id, c) for c in credentials
    ]:
        world.aws.dynamodb.put_item(TableName=tables.table("policy_entries"), Item=item)
    return devices, credentials


def test_an_old_cluster_is_bootstrapped_and_its_node_converges(world: World) -> None:
    cluster_id, credential = world.cluster(seed=False)
    devices, credentials = make_legacy(world, cluster_id)
    at_counter = policy_digest(
        devices, credentials, ClusterSettings(unknown_device_action=Access.ALLOW), 2
    )
    world.connect(credential, "node-a", "conn-a")
    node, wire = node_of(world, cluster_id), Wire(world, "conn-a")

    node.refresh()  # the first advance marks it; the snapshot states version 0
    assert node.index.version == 0 and len(list(node.index.devices())) == 3
    found = world.clusters.get_cluster(cluster_id)
    assert found is not None and found.legacy and found.bootstrap is not None
    assert (found.bootstrap.counter, found.bootstrap.at) == (LEGACY_COUNTER, T0)

    world.override("dave", "dev1", "block")
    world.drain()  # version 7 commits through the log, W stays at the placeholder
    world.clock.advance(seconds=ABANDON_GRACE.total_seconds())
    assert keepalive(node, "conn-a") == {"statusCode": 200}
    (pong,) = [m for m in wire.lose() if m["type"] == "pong"]
    assert pong["version"] == 0  # a keepalive marks, never reads the entries

    with pytest.raises(DeltaTooOld):
        world.delta(cluster_id, 0)  # bootstraps; no log below the counter: take a snapshot
    found = world.clusters.get_cluster(cluster_id)
    assert found is not None and not found.legacy and found.bootstrap is None
    assert found.committed_version == LEGACY_COUNTER + 1
    assert found.watermark.digest_at(LEGACY_COUNTER) == at_counter
    snapshot = world.snapshot(cluster_id)
    assert snapshot.version == LEGACY_COUNTER + 1
    assert found.watermark.digest == policy_digest(
        snapshot.devices, snapshot.credentials, snapshot.settings, snapshot.settings_version
    )

    keepalive(node, "conn-a")
    (pong,) = wire.deliver(node)  # version 7 > 0: the delta is refused, the snapshot taken
    assert pong["version"] == LEGACY_COUNTER + 1
    assert node.index.version == LEGACY_COUNTER + 1 and node.exact()
    keepalive(node, "conn-a")
    (verdict,) = wire.deliver(node)
    assert (verdict["digest_check"], verdict["checked_version"]) == ("in_sync", 7)

    world.override("alice", "dev1", "allow")  # and on it goes, as for any cluster
    world.drain()
    wire.deliver(node)
    assert node.index.version == LEGACY_COUNTER + 2
    keepalive(node, "conn-a")
    (verdict,) = wire.deliver(node)
    assert (verdict["digest_check"], verdict["checked_version"]) == ("in_sync", 8)
