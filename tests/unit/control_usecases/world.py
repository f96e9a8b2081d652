"""A control plane on the in-memory fakes (``tests.support.fakes``): one cluster, its
credential, the stores a version is committed through, a settable clock, and gateway
nodes (``tests.support.node.SimNode``) connected to it, each with its own connection
whose posted messages the tests deliver, duplicate, reorder or lose."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lambdas.domain.credentials import StoredCredential
from lambdas.domain.records import Connection
from lambdas.usecases.connections import Answered, keepalive
from lambdas.usecases.policy_sync import build_delta, build_snapshot
from lambdas.usecases.policy_versions import VersionStores, advance
from seg_contract import PolicyDelta, PolicySnapshot
from seg_contract.signing import Applied, Kind, SignedMessage, SignedPayload, Verifier
from tests.support.fakes import (
    MemoryClusters,
    MemoryConnections,
    MemoryCredentials,
    MemoryEntries,
    MemoryGatewayNodes,
    MemoryPolicyLog,
    MemoryPolicyState,
    MemoryPoster,
    local_signing,
)
from tests.support.node import SimNode

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CLUSTER = "c-1"
KEY = "k1"


@dataclass
class FakeControlPlane:
    state: MemoryPolicyState = field(default_factory=MemoryPolicyState)
    connections: MemoryConnections = field(default_factory=MemoryConnections)
    poster: MemoryPoster = field(default_factory=MemoryPoster)
    credentials: MemoryCredentials = field(default_factory=MemoryCredentials)
    nodes: MemoryGatewayNodes = field(default_factory=MemoryGatewayNodes)
    now: datetime = T0

    def __post_init__(self) -> None:
        self.signing, self.signers = local_signing()
        self.clusters = MemoryClusters(self.state)
        self.entries = MemoryEntries(self.state)
        self.log = MemoryPolicyLog(self.state)
        self.clusters.create_cluster(CLUSTER, "hq", self.now)
        self.credentials.add_credential(StoredCredential(CLUSTER, KEY, "0" * 64, self.now))

    @property
    def versions(self) -> VersionStores:
        return VersionStores(
            self.clusters, self.entries, self.log, self.connections, self.poster, self.signing
        )

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def snapshot(self) -> PolicySnapshot:
        return build_snapshot(
            CLUSTER, clusters=self.clusters, entries=self.entries, log=self.log, now=self.now
        )

    def delta(self, since: int) -> PolicyDelta:
        return build_delta(
            CLUSTER, since, clusters=self.clusters, entries=self.entries, log=self.log, now=self.now
        )

    def advance(self) -> int:
        return advance(
            CLUSTER, clusters=self.clusters, log=self.log, now=self.now
        ).committed_version

    def node(self, node_id: str) -> SimNode:
        """A node with an open connection ``conn-<node_id>``."""
        self.connections.put(Connection(f"conn-{node_id}", CLUSTER, node_id, KEY, self.now))
        keys = [s.public for s in self.signers.by_arn.values()]
        return SimNode(node_id, CLUSTER, snapshot=self.snapshot, delta=self.delta, keys=keys)

    def keepalive(self, node: SimNode) -> Answered:
        return keepalive(
            f"conn-{node.node_id}",
            node.keepalive().model_dump_json(),
            connections=self.connections,
            nodes=self.nodes,
            clusters=self.clusters,
            log=self.log,
            credentials=self.credentials,
            poster=self.poster,
            signing=self.signing,
            now=self.now,
        )

    def opened(self, data: bytes) -> dict[str, Any]:
        """A posted frame: a ``signed`` envelope that must verify with the control
        plane's key, unwrapped to the push it carries."""
        signed = SignedPayload.from_envelope(SignedMessage.model_validate_json(data))
        push = json.loads(signed.payload)
        verified = Verifier(s.public for s in self.signers.by_arn.values()).verify(
            signed,
            cluster_id=push["cluster_id"],
            kinds=Kind(push["type"]),
            applied=Applied(),
            now_ms=signed.statement().issued_at_ms,
        )
        message: dict[str, Any] = json.loads(verified.payload)
        return message

    def inbox(self, node: SimNode) -> list[bytes]:
        """What was posted to the node's connection and not yet delivered or lost."""
        return self.poster.posted.setdefault(f"conn-{node.node_id}", [])

    def deliver_all(self, node: SimNode) -> None:
        inbox = self.inbox(node)
        while inbox:
            node.receive(inbox.pop(0))
