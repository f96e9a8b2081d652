"""Gateway clusters from the console: register (the credential is shown once), rotate
and revoke credentials, set the sealing public key, and read a cluster with its nodes.

Rotation issues a new key and leaves the old ones valid, so an admin can roll the new
credential onto every node before revoking the old key (no outage). Revoking a key
tells the nodes connected with it (a signed ``revoked`` push: a node stops only on one
that verifies) and closes their connections; their
next ``$connect`` or API call is refused (403). The connections are listed from an
eventually consistent index, so a connection opened a moment before the revocation may
be missing from the first listing: the revocation lists them again after
``RELIST_AFTER_S``, and every keepalive re-checks its connection's credential
(``lambdas.usecases.connections``), so no connection of a revoked key outlives one
report interval.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lambdas.domain.credentials import StoredCredential
from lambdas.domain.errors import InvalidInput, NotFound
from lambdas.domain.gateway_nodes import NodeReport
from lambdas.domain.records import ClusterRecord
from lambdas.ports import (
    ClusterCredentialStore,
    ClusterStore,
    ComplianceQueue,
    ConnectionPoster,
    ConnectionStore,
    GatewayNodeStore,
)
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.gateway_auth import IssuedCredential, issue_credential
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.push import close, send_to
from lambdas.usecases.resync import seed_cluster
from seg_contract import PushRevoked
from seg_contract.crypto import public_key_is_valid

# DynamoDB's global secondary indexes typically catch up within a second: the second
# listing of a revoked key's connections finds those the first one missed.
RELIST_AFTER_S = 1.0


@dataclass(frozen=True)
class NodeStatus:
    report: NodeReport
    connected: bool


@dataclass(frozen=True)
class ClusterDetail:
    cluster: ClusterRecord
    nodes: list[NodeStatus]
    credentials: list[StoredCredential]


def new_cluster_id() -> str:
    return "c-" + secrets.token_hex(5)


def validate_public_key(public_key: str) -> str:
    """A base64 X25519 public key (32 bytes), as gateways generate it
    (``seg_contract.crypto.generate_cluster_keypair``)."""
    key = public_key.strip()
    if not public_key_is_valid(key):
        raise InvalidInput("public_key must be a base64 32-byte X25519 public key")
    return key


def _store(credentials: ClusterCredentialStore, issued: IssuedCredential, now: datetime) -> None:
    credentials.add_credential(
        StoredCredential(
            cluster_id=issued.cluster_id,
            key_id=issued.key_id,
            secret_sha256=issued.secret_sha256,
            created_at=now,
        )
    )


def register_cluster(
    name: str,
    public_key: str | None,
    *,
    clusters: ClusterStore,
    credentials: ClusterCredentialStore,
    now: datetime,
) -> tuple[ClusterRecord, IssuedCredential]:
    key = validate_public_key(public_key) if public_key else ""
    cluster = clusters.create_cluster(new_cluster_id(), name.strip(), now, public_key=key)
    issued = issue_credential(cluster.cluster_id)
    _store(credentials, issued, now)
    return cluster, issued


def create_cluster(
    name: str,
    public_key: str | None,
    *,
    clusters: ClusterStore,
    credentials: ClusterCredentialStore,
    queue: ComplianceQueue,
    now: datetime,
) -> tuple[ClusterRecord, IssuedCredential]:
    """Register a cluster and seed it with every device's entry: a cluster registered
    after devices exist must not treat them all as unknown until the next sweep."""
    cluster, issued = register_cluster(
        name, public_key, clusters=clusters, credentials=credentials, now=now
    )
    seed_cluster(cluster.cluster_id, queue=queue, clusters=clusters, now=now)
    return cluster, issued


def rotate_credential(
    cluster_id: str,
    *,
    clusters: ClusterStore,
    credentials: ClusterCredentialStore,
    now: datetime,
) -> IssuedCredential:
    require_cluster(clusters, cluster_id)
    issued = issue_credential(cluster_id)
    _store(credentials, issued, now)
    return issued


def revoke_credentials(
    cluster_id: str,
    key_id: str | None,
    *,
    clusters: ClusterStore,
    credentials: ClusterCredentialStore,
    connections: ConnectionStore,
    poster: ConnectionPoster | None,
    signing: PolicySigning,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[str], int]:
    """Revoke one key (or all); push ``revoked`` to, and disconnect, the nodes that used
    it, twice (see the module doc). Returns (key ids revoked now, connections closed)."""
    require_cluster(clusters, cluster_id)
    known = {c.key_id for c in credentials.list_credentials(cluster_id)}
    if key_id is not None and key_id not in known:
        raise NotFound(f"cluster {cluster_id} has no credential {key_id}")
    revoked = credentials.revoke_credentials(cluster_id, now, key_id)
    if poster is None or not revoked:
        return revoked, 0
    closed: set[str] = set()
    for listing in range(2):
        if listing:
            sleep(RELIST_AFTER_S)
        targets = [
            c
            for c in connections.list_for_cluster(cluster_id)
            if c.key_id in revoked and c.connection_id not in closed
        ]
        send_to(
            targets,
            PushRevoked(cluster_id=cluster_id),
            connections=connections,
            poster=poster,
            signing=signing,
            now=now,
        )
        for connection in targets:
            close(connection.connection_id, connections=connections, poster=poster)
            closed.add(connection.connection_id)
    return revoked, len(closed)


def set_public_key(cluster_id: str, public_key: str, *, clusters: ClusterStore) -> str:
    require_cluster(clusters, cluster_id)
    key = validate_public_key(public_key)
    clusters.set_public_key(cluster_id, key)
    return key


def cluster_detail(
    cluster_id: str,
    *,
    clusters: ClusterStore,
    credentials: ClusterCredentialStore,
    nodes: GatewayNodeStore,
    connections: ConnectionStore,
) -> ClusterDetail:
    cluster = require_cluster(clusters, cluster_id)
    return ClusterDetail(
        cluster=cluster,
        nodes=node_statuses(cluster_id, nodes=nodes, connections=connections),
        credentials=list(credentials.list_credentials(cluster_id)),
    )


def cluster_nodes(
    cluster_id: str,
    *,
    clusters: ClusterStore,
    nodes: GatewayNodeStore,
    connections: ConnectionStore,
) -> list[NodeStatus]:
    """The cluster's nodes (``NotFound`` for an unknown cluster)."""
    require_cluster(clusters, cluster_id)
    return node_statuses(cluster_id, nodes=nodes, connections=connections)


def node_statuses(
    cluster_id: str, *, nodes: GatewayNodeStore, connections: ConnectionStore
) -> list[NodeStatus]:
    """Every node the cluster has heard of, and whether it has an open connection (a
    node connected but not yet reporting is listed too)."""
    connected = {c.node_id for c in connections.list_for_cluster(cluster_id)}
    reports = {r.node_id: r for r in nodes.list_nodes(cluster_id)}
    for node_id in connected - reports.keys():
        reports[node_id] = NodeReport(cluster_id=cluster_id, node_id=node_id, last_seen="")
    return [NodeStatus(reports[n], n in connected) for n in sorted(reports)]
