"""Convergence with the real adapters on moto: the issue's interleaving (version taken,
snapshot fetched, entry written, push lost, keepalive) ends with the node holding the
entry; a dead writer's version is fenced after the grace and its late commit refused; a
writer that fails gives its version up at once; concurrent writers never let a snapshot
or a delta claim a version without its entries; a keepalive refuses a revoked
credential."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import replace
from typing import Any

import pytest

from lambdas.domain.errors import NotFound, VersionFenced
from lambdas.domain.messages import EvaluateDevice
from lambdas.domain.policy_log import ABANDON_GRACE, ChangeKind, LogRecord, LogState
from lambdas.handlers import compliance_reader, ws_default
from lambdas.usecases.clusters import revoke_credentials, rotate_credential
from lambdas.usecases.compliance import handle_message
from lambdas.usecases.policy_sync import snapshot_unless_held
from lambdas.usecases.policy_versions import commit_version, write_version
from seg_contract import Access, DeviceEntry, PolicyDelta, PolicySnapshot
from seg_contract.digest import policy_digest
from tests.support.events import LambdaContext, ws_message_event
from tests.support.node import SimNode
from tests.support.policy import propose_entry

from .conftest import InterleavingDevices, World


def node_of(world: World, cluster_id: str, node_id: str = "node-a") -> SimNode:
    return SimNode(
        node_id,
        cluster_id,
        snapshot=lambda: world.snapshot(cluster_id),
        delta=lambda since: world.delta(cluster_id, since),
        keys=[world.aws.signing_key],  # what the stack's nodes pin
    )


class Wire:
    """What the control plane posted to one connection (moto keeps it all), delivered to
    the node (signed envelopes, verified there), or lost. Both return the pushes."""

    def __init__(self, world: World, connection_id: str) -> None:
        self.world, self.connection_id, self.seen = world, connection_id, 0

    def new(self) -> list[dict[str, Any]]:
        posted = self.world.posted_raw(self.connection_id)
        fresh, self.seen = posted[self.seen :], len(posted)
        return fresh

    def lose(self) -> list[dict[str, Any]]:
        return [self.world.aws.unwrap(frame) for frame in self.new()]

    def deliver(self, node: SimNode) -> list[dict[str, Any]]:
        frames = self.new()
        for frame in frames:
            node.receive(json.dumps(frame))
        return [self.world.aws.unwrap(frame) for frame in frames]


def keepalive(node: SimNode, connection_id: str) -> dict[str, Any]:
    body = node.keepalive().model_dump_json()
    return ws_default.handler(ws_message_event(connection_id, body), LambdaContext())


def committed_version(world: World, cluster_id: str) -> int:
    cluster = world.clusters.get_cluster(cluster_id)
    assert cluster is not None
    return cluster.committed_version


def test_the_issues_interleaving_converges(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    node, wire = node_of(world, cluster_id), Wire(world, "conn-a")
    node.refresh()
    world.enroll("mdm-1", "alice", "dev1")
    (message,) = world.receive()
    fetched: list[PolicySnapshot] = []

    def snapshot_meanwhile() -> None:  # the reader has taken version 1, not written it
        cluster = world.clusters.get_cluster(cluster_id)
        assert cluster is not None and cluster.policy_version == 1
        fetched.append(world.snapshot(cluster_id))
        node.refresh()

    stores = compliance_reader.function.root()
    interleaved = replace(stores, devices=InterleavingDevices(stores.devices, snapshot_meanwhile))
    monkeypatch.setattr(compliance_reader.function, "root", lambda: interleaved)

    assert world.invoke_reader([message]) == {"batchItemFailures": []}  # the entry is written

    (snapshot,) = fetched
    assert (snapshot.version, snapshot.devices) == (0, ())  # W < 1: no promise of version 1
    assert [m["version"] for m in wire.lose()] == [1]  # the push is lost
    assert (node.index.version, node.index.entry("alice", "dev1")) == (0, None)
    # The hourly refresh is no longer answered "not modified": W moved to 1.
    version, refreshed = snapshot_unless_held(
        cluster_id,
        lambda held: held == node.index.version,
        clusters=world.clusters,
        entries=world.entries,
        log=world.log,
        now=world.clock(),
    )
    assert version == 1 and refreshed is not None

    assert keepalive(node, "conn-a") == {"statusCode": 200}
    (pong,) = wire.deliver(node)  # pong version 1 > 0: the node fetches the delta since 0
    assert (pong["type"], pong["version"]) == ("pong", 1)
    entry = node.index.entry("alice", "dev1")
    assert node.index.version == 1 and entry is not None and entry.access is Access.ALLOW
    assert node.fetches["delta"] == 1

    keepalive(node, "conn-a")
    (verdict,) = wire.deliver(node)
    assert (verdict["digest_check"], verdict["checked_version"]) == ("in_sync", 1)


def _record(world: World, cluster_id: str, version: int) -> LogRecord:
    (record,) = world.log.read(cluster_id, version - 1, version)
    return record


def test_a_dead_writers_version_is_fenced_after_the_grace(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    node, wire = node_of(world, cluster_id), Wire(world, "conn-a")
    node.refresh()
    dead = world.clusters.next_version(cluster_id)  # version 1: its writer dies
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # version 2 commits and is pushed
    wire.deliver(node)  # a gap: applied per key, the delta since 0 says 0
    assert node.index.version == 0 and node.index.entry("alice", "dev1") is not None
    assert committed_version(world, cluster_id) == 0
    assert _record(world, cluster_id, dead).state is LogState.PENDING

    world.clock.advance(seconds=ABANDON_GRACE.total_seconds() - 30)
    keepalive(node, "conn-a")
    assert [m["version"] for m in wire.deliver(node)] == [0]  # still within the grace

    world.clock.advance(seconds=31)
    keepalive(node, "conn-a")
    assert [m["version"] for m in wire.deliver(node)] == [2]  # fenced; W moved over it
    assert _record(world, cluster_id, dead).state is LogState.ABANDONED
    assert node.index.version == 2

    # The writer wakes up: its commit is refused, and the use case redoes it under a new
    # version.
    with pytest.raises(VersionFenced):
        commit_version(
            cluster_id, dead, propose_entry("bob"), stores=world.versions, now=world.clock()
        )
    assert world.entries.get_device_entry(cluster_id, "bob", "dev1") is None
    again = write_version(
        cluster_id, propose_entry("bob"), stores=world.versions, now=world.clock(), version=dead
    )
    assert again.version == 3 and committed_version(world, cluster_id) == 3
    bob = world.entries.get_device_entry(cluster_id, "bob", "dev1")
    assert bob is not None and bob.version == 3


def test_a_writer_that_fails_gives_its_version_up_at_once(world: World) -> None:
    cluster_id, _ = world.cluster()
    stores = compliance_reader.function.root()
    with pytest.raises(NotFound, match="ghost"):
        handle_message(EvaluateDevice(mdm_device_id="ghost", reason="x"), stores, world.clock())
    assert _record(world, cluster_id, 1).state is LogState.ABANDONED
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()
    assert committed_version(world, cluster_id) == 2  # no grace to wait for


def _serialized(client: Any) -> None:
    """One DynamoDB request at a time (moto's backend has no locks; DynamoDB applies
    each request atomically): threads interleave between requests, as they do on AWS."""
    lock = threading.RLock()

    def acquire(**_: Any) -> None:  # a before-call handler's return value is a response
        lock.acquire()

    def release(**_: Any) -> None:
        lock.release()

    client.meta.events.register("before-call.dynamodb.*", acquire)
    client.meta.events.register("after-call.dynamodb.*", release)


def test_concurrent_writers_never_let_a_fetch_claim_a_missing_entry(world: World) -> None:
    cluster_id, _ = world.cluster(seed=False)
    _serialized(world.aws.dynamodb)
    users = [f"user{i}" for i in range(5)]
    snapshots: list[PolicySnapshot] = []
    deltas: list[PolicyDelta] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(6):
                propose = propose_entry(rng.choice(users), rng.choice([Access.ALLOW, Access.BLOCK]))
                write_version(cluster_id, propose, stores=world.versions, now=world.clock())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def reader() -> None:
        rng = random.Random(99)
        try:
            while not done.is_set():
                snapshot = world.snapshot(cluster_id)
                snapshots.append(snapshot)
                deltas.append(world.delta(cluster_id, rng.randint(0, snapshot.version)))
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []

    log = list(world.log.read(cluster_id, 0, 1000))
    assert [r.version for r in log] == list(range(1, 25))
    assert all(r.state is LogState.COMMITTED for r in log)
    assert committed_version(world, cluster_id) == 24
    assert len(snapshots) > 2 and len({s.version for s in snapshots}) > 2

    def covers(devices: tuple[DeviceEntry, ...], after: int, upto: int) -> None:
        held = {d.key: d.version for d in devices}
        for record in log:
            if after < record.version <= upto:
                for key in record.changed(ChangeKind.DEVICE):
                    assert held.get(key, 0) >= record.version, (key, record.version, upto)

    for snapshot in snapshots:
        covers(snapshot.devices, 0, snapshot.version)
    for delta in deltas:
        covers(delta.devices, delta.since_version, delta.version)

    final = world.snapshot(cluster_id)
    cluster = world.clusters.get_cluster(cluster_id)
    assert cluster is not None
    assert policy_digest(final.devices, final.credentials, final.settings, 0) == (
        cluster.watermark.digest
    )


def test_a_keepalive_with_a_revoked_credential_is_refused_and_closed(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    rotate_credential(
        cluster_id, clusters=world.clusters, credentials=world.credentials, now=world.clock()
    )
    # Revoked without reaching the connection (as when the index missed it).
    revoke_credentials(
        cluster_id,
        credential.split("_")[2],
        clusters=world.clusters,
        credentials=world.credentials,
        connections=world.connections,
        poster=None,
        signing=world.signing,
        now=world.clock(),
    )
    node = node_of(world, cluster_id)
    assert keepalive(node, "conn-a") == {"statusCode": 403, "body": "gateway credential revoked"}
    assert world.connections.get("conn-a") is None
