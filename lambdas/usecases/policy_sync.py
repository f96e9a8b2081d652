"""Build a cluster's full policy snapshot and its delta since a version (the gateway's
bulk refresh and reconnect resync; ``seg_contract.models`` explains the versions and
``lambdas.usecases.policy_versions`` the committed version W they state).

Both first advance W (so a dead writer's hole does not hold a node back longer than the
grace), then read the cluster item consistently, and only then the entries:

- the snapshot says ``version = W`` and holds every stored entry, read consistently
  after W: for every key the newest entry <= W or a newer one (harmless: gateways apply
  entries per key, newest wins);
- the delta since N reads the log records of (N, W] consistently and then the current
  entries of every key they changed (and the settings, when one of them changed those).
  N >= W is an empty delta at version N (a node may be ahead of W: it applied pushes of
  versions committed since W last moved); N above the last version handed out, a span
  beyond ``MAX_DELTA_SPAN`` or a log that no longer covers (N, W] is HTTP 410.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lambdas.domain.errors import DeltaTooOld, InvalidInput
from lambdas.domain.policy_log import ChangeKind, LogState
from lambdas.domain.records import ClusterRecord
from lambdas.domain.versioning import DeltaVerdict, check_coverage, check_delta
from lambdas.ports import ClusterStore, PolicyEntryStore, PolicyLog
from lambdas.usecases.policy_versions import advance
from seg_contract import PolicyDelta, PolicySnapshot


def build_snapshot(
    cluster_id: str,
    *,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
    log: PolicyLog,
    now: datetime,
) -> PolicySnapshot:
    cluster = advance(cluster_id, clusters=clusters, log=log, now=now, entries=entries)
    return _snapshot(cluster, entries, now)


def snapshot_unless_held(
    cluster_id: str,
    held: Callable[[int], bool],
    *,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
    log: PolicyLog,
    now: datetime,
) -> tuple[int, PolicySnapshot | None]:
    """The cluster's committed version and full snapshot, or ``(version, None)`` when
    ``held(version)`` says the caller already has it (a conditional GET: refreshing an
    unchanged cluster costs one read of the cluster item)."""
    cluster = advance(cluster_id, clusters=clusters, log=log, now=now, entries=entries)
    if held(cluster.committed_version):
        return cluster.committed_version, None
    return cluster.committed_version, _snapshot(cluster, entries, now)


def _snapshot(cluster: ClusterRecord, entries: PolicyEntryStore, now: datetime) -> PolicySnapshot:
    devices, credentials = entries.list_all(cluster.cluster_id)
    return PolicySnapshot(
        cluster_id=cluster.cluster_id,
        version=cluster.committed_version,
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
    log: PolicyLog,
    now: datetime,
) -> PolicyDelta:
    """Everything that changed after ``since``, up to W. Raises ``InvalidInput``
    (negative), ``DeltaTooOld`` (see the module doc) and ``NotFound``."""
    if since < 0:
        raise InvalidInput("since must be a non-negative policy version")
    cluster = advance(cluster_id, clusters=clusters, log=log, now=now, entries=entries)
    committed = cluster.committed_version
    check = check_delta(since, committed=committed, counter=cluster.policy_version)
    if not check.available:
        raise DeltaTooOld(check.detail, since)
    if check.verdict is DeltaVerdict.CURRENT:
        return PolicyDelta(
            cluster_id=cluster_id, since_version=since, version=since, generated_at=now
        )
    records = list(log.read(cluster_id, since, committed))
    coverage = check_coverage(since, committed, (r.version for r in records))
    if not coverage.available:
        raise DeltaTooOld(coverage.detail, since)
    committed_records = [r for r in records if r.state is LogState.COMMITTED]
    device_keys = {k for r in committed_records for k in r.changed(ChangeKind.DEVICE)}
    users = {k for r in committed_records for k in r.changed(ChangeKind.CREDENTIAL)}
    settings_changed = any(any(r.changed(ChangeKind.SETTINGS)) for r in committed_records)
    devices, credentials = entries.get_many(cluster_id, device_keys, users)
    return PolicyDelta(
        cluster_id=cluster_id,
        since_version=since,
        version=committed,
        generated_at=now,
        settings=cluster.settings if settings_changed else None,
        settings_version=cluster.settings_version if settings_changed else 0,
        devices=tuple(sorted(devices.values(), key=lambda d: (d.version, d.key))),
        credentials=tuple(sorted(credentials.values(), key=lambda c: (c.version, c.user))),
    )
