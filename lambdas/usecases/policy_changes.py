"""Cluster-wide policy changes made from the console, each stamped with the cluster's
next policy version and pushed to every node: settings, and a user's credential
substitution entry (what ``UserCredential`` carries; its hashing and sealing are the
API side's business)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lambdas.ports import ClusterStore, ConnectionPoster, ConnectionStore, PolicyEntryStore
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.push import PushReport, publish
from seg_contract import (
    ClusterSettings,
    DevicePassword,
    PushChange,
    UserCredential,
    normalize_user,
)


@dataclass(frozen=True)
class PolicyStores:
    """Where a cluster-wide change is versioned, stored and pushed from."""

    clusters: ClusterStore
    entries: PolicyEntryStore
    connections: ConnectionStore
    poster: ConnectionPoster


def change_settings(
    cluster_id: str,
    settings: ClusterSettings,
    *,
    clusters: ClusterStore,
    connections: ConnectionStore,
    poster: ConnectionPoster,
) -> tuple[int, PushReport]:
    """Store new settings under the next version and push them; return the version."""
    require_cluster(clusters, cluster_id)
    version = clusters.next_version(cluster_id)
    clusters.put_settings(cluster_id, settings, version)
    push = PushChange(cluster_id=cluster_id, version=version, settings=settings)
    return version, publish(cluster_id, push, connections=connections, poster=poster)


def change_credential(
    cluster_id: str,
    user: str,
    *,
    enabled: bool,
    pw1_hashes: Sequence[str],
    sealed_pw2: str,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
    connections: ConnectionStore,
    poster: ConnectionPoster,
    now: datetime,
    device_passwords: Sequence[DevicePassword] = (),
) -> UserCredential:
    """Store a user's substitution entry under the next version and push it."""
    require_cluster(clusters, cluster_id)
    version = clusters.next_version(cluster_id)
    credential = UserCredential(
        user=normalize_user(user),
        enabled=enabled,
        pw1_hashes=tuple(pw1_hashes),
        device_passwords=tuple(device_passwords),
        sealed_pw2=sealed_pw2,
        version=version,
        updated_at=now,
    )
    if entries.put_credential(cluster_id, credential):
        push = PushChange(cluster_id=cluster_id, version=version, credentials=(credential,))
        publish(cluster_id, push, connections=connections, poster=poster)
    return credential
