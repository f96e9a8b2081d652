"""Build a cluster's full policy snapshot and its delta since a version (the gateway's
bulk refresh and reconnect resync; ``seg_contract.models`` explains the versions).

The cluster's counter is read *before* the entries: an entry written meanwhile may carry
a higher version than the counter read, so the answer's version is the higher of the
two. Gateways apply entries per key (newest wins), so including such an entry is
harmless, and leaving it out could hide a key's only state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lambdas.domain.records import ClusterRecord
from lambdas.domain.versioning import DeltaVerdict, check_delta
from lambdas.ports import ClusterStore, PolicyEntryStore
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.errors import Gone, InvalidInput
from seg_contract import DeviceEntry, PolicyDelta, PolicySnapshot, UserCredential


class DeltaTooOld(Gone):
    """The delta asked for cannot be built exactly: fetch the full snapshot (HTTP 410)."""

    def __init__(self, detail: str, since: int) -> None:
        super().__init__(detail)
        self.since = since


def _top(version: int, devices: list[DeviceEntry], creds: list[UserCredential]) -> int:
    return max([version, *(d.version for d in devices), *(c.version for c in creds)])


def build_snapshot(
    cluster_id: str, *, clusters: ClusterStore, entries: PolicyEntryStore, now: datetime
) -> PolicySnapshot:
    return _snapshot(require_cluster(clusters, cluster_id), entries, now)


def snapshot_unless_held(
    cluster_id: str,
    held: Callable[[int], bool],
    *,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
    now: datetime,
) -> tuple[int, PolicySnapshot | None]:
    """The cluster's version and full snapshot, or ``(version, None)`` when
    ``held(version)`` says the caller already has it (a conditional GET). Asked first of
    the cluster item alone, so refreshing an unchanged cluster costs one read; asked
    again of the built snapshot, whose version may be higher (see the module doc)."""
    cluster = require_cluster(clusters, cluster_id)
    if held(cluster.current_version):
        return cluster.current_version, None
    snapshot = _snapshot(cluster, entries, now)
    return snapshot.version, None if held(snapshot.version) else snapshot


def _snapshot(cluster: ClusterRecord, entries: PolicyEntryStore, now: datetime) -> PolicySnapshot:
    cluster_id = cluster.cluster_id
    devices, credentials = entries.list_all(cluster_id)
    return PolicySnapshot(
        cluster_id=cluster_id,
        version=_top(cluster.current_version, devices, credentials),
        generated_at=now,
        settings=cluster.settings,
        settings_version=cluster.settings_version,
        devices=tuple(sorted(devices, key=lambda d: d.key)),
        credentials=tuple(sorted(credentials, key=lambda c: c.user)),
    )


def build_delta(
    cluster_id: str,
    since: int,
    *,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
    now: datetime,
) -> PolicyDelta:
    """Everything that changed after ``since``. Raises ``InvalidInput`` (negative),
    ``DeltaTooOld`` (purged, or a version this cluster never reached) and ``NotFound``."""
    if since < 0:
        raise InvalidInput("since must be a non-negative policy version")
    cluster = require_cluster(clusters, cluster_id)
    check = check_delta(
        since, current_version=cluster.policy_version, purge_watermark=cluster.purge_watermark
    )
    if check.verdict is not DeltaVerdict.AVAILABLE:
        raise DeltaTooOld(check.detail, since)
    devices, credentials = entries.list_since(cluster_id, since)
    return PolicyDelta(
        cluster_id=cluster_id,
        since_version=since,
        version=_top(max(cluster.policy_version, since), devices, credentials),
        generated_at=now,
        settings=cluster.settings if cluster.settings_version > since else None,
        settings_version=cluster.settings_version if cluster.settings_version > since else 0,
        devices=tuple(sorted(devices, key=lambda d: (d.version, d.key))),
        credentials=tuple(sorted(credentials, key=lambda c: (c.version, c.user))),
    )
