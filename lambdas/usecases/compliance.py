"""What the compliance reader does with one message from the compliance queue.

Theory of operation
-------------------
For every target cluster the reader first *takes* the cluster's next policy version
(an atomic counter), then reads the current device record and overrides, evaluates,
and writes each entry with a conditional "newer version wins" write. Taking the version
before reading is what makes concurrent readers safe: if reader B took a higher version
than reader A, B read after A took its version, hence after A's input (device record
or override) was stored, so the entry that wins (B's) reflects both. A message
processed twice writes the same state again under a new version; a stale one cannot
overwrite a newer entry. Every written entry is pushed to every connection of its
cluster (``PushChange``), and connections that are gone are forgotten.

All entries one message writes in one cluster share that cluster's version: a delta
"since N" is still exact, and a gateway applies entries per key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lambdas.domain.access import (
    EntryDecision,
    ManualOverride,
    decide,
    owned_keys,
    split_key,
    to_entry,
)
from lambdas.domain.compliance import DeviceRecord, evaluate_compliance
from lambdas.domain.messages import (
    ComplianceMessage,
    EvaluateDevice,
    ManualOverrideRequest,
    ReevaluateAll,
)
from lambdas.domain.records import ClusterRecord, Connection
from lambdas.ports import (
    ClusterStore,
    ComplianceQueue,
    ConnectionPoster,
    ConnectionStore,
    DeviceStore,
    ManualOverrideStore,
    PolicyEntryStore,
)
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.errors import NotFound
from lambdas.usecases.push import PushReport, send_to
from lambdas.usecases.resync import continue_reevaluation
from seg_contract import DeviceEntry, PushChange

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComplianceStores:
    devices: DeviceStore
    entries: PolicyEntryStore
    clusters: ClusterStore
    overrides: ManualOverrideStore
    connections: ConnectionStore
    poster: ConnectionPoster
    queue: ComplianceQueue | None = None  # for re-evaluation fan-out (ReevaluateAll)


@dataclass
class ComplianceOutcome:
    """What one message changed: entries written per cluster, stale writes refused."""

    written: list[tuple[str, DeviceEntry]] = field(default_factory=list)
    refused: int = 0  # a newer entry was stored already
    queued: int = 0  # evaluations queued by a ReevaluateAll page
    pushes: PushReport = field(default_factory=PushReport)


def handle_message(
    message: ComplianceMessage, stores: ComplianceStores, now: datetime
) -> ComplianceOutcome:
    if isinstance(message, EvaluateDevice):
        return evaluate_device(message.mdm_device_id, stores, now, message.cluster_id)
    if isinstance(message, ManualOverrideRequest):
        return apply_override(message, stores, now)
    if isinstance(message, ReevaluateAll):
        if stores.queue is None:
            raise RuntimeError("re-evaluation needs the compliance queue")
        queued = continue_reevaluation(
            message, devices=stores.devices, overrides=stores.overrides, queue=stores.queue
        )
        return ComplianceOutcome(queued=queued)
    return evaluate_email_device(message.user, message.device_id, stores, now, message.cluster_id)


def apply_override(
    request: ManualOverrideRequest, stores: ComplianceStores, now: datetime
) -> ComplianceOutcome:
    stored = stores.overrides.put(
        ManualOverride(
            user=request.user,
            device_id=request.device_id,
            action=request.action,
            reason=request.reason,
            actor=request.actor,
            updated_at=request.requested_at,
        )
    )
    if not stored:
        logger.info("override request %s is older than the stored one", request.request_id)
    return evaluate_email_device(request.user, request.device_id, stores, now, None)


def evaluate_email_device(
    user: str,
    device_id: str,
    stores: ComplianceStores,
    now: datetime,
    cluster_id: str | None,
) -> ComplianceOutcome:
    """Re-evaluate the MDM device owning this email device, or, when the MDM does not
    know it, write its entry from the override (or the unknown-device action)."""
    owner = stores.devices.find_by_email_device(user, device_id)
    if owner is not None and stores.devices.get(owner) is not None:
        return evaluate_device(owner, stores, now, cluster_id)
    clusters = _target_clusters(stores, cluster_id)
    versions = _take_versions(stores, clusters)
    override = stores.overrides.get(user, device_id)
    outcome = ComplianceOutcome()
    for cluster in clusters:
        decision = decide(
            user,
            device_id,
            device=None,
            compliance=None,
            override=override,
            unknown_device_action=cluster.settings.unknown_device_action,
        )
        _write_and_push(
            stores,
            cluster,
            [(decision, None)],
            version=versions[cluster.cluster_id],
            now=now,
            outcome=outcome,
        )
    return outcome


def evaluate_device(
    mdm_device_id: str, stores: ComplianceStores, now: datetime, cluster_id: str | None
) -> ComplianceOutcome:
    clusters = _target_clusters(stores, cluster_id)
    versions = _take_versions(stores, clusters)
    device = stores.devices.get(mdm_device_id)
    if device is None:
        raise NotFound(f"MDM device {mdm_device_id} not found")
    result = evaluate_compliance(device, stores.clusters.get_compliance_policy(), now)
    # Every key this device owns or owned, unless another MDM device has claimed it
    # since (an EAS id re-used after a wipe): that device's evaluation writes it.
    owned = owned_keys(device)
    retired = sorted(device.retired_keys - set(owned))
    keys = [
        key
        for key in [*owned, *retired]
        if stores.devices.find_by_email_device(*split_key(key)) in (None, mdm_device_id)
    ]
    overrides = {key: stores.overrides.get(*split_key(key)) for key in keys}
    outcome = ComplianceOutcome()
    for cluster in clusters:
        decisions = [
            (
                decide(
                    *split_key(key),
                    device=device,
                    compliance=result,
                    override=overrides[key],
                    unknown_device_action=cluster.settings.unknown_device_action,
                ),
                device,
            )
            for key in keys
        ]
        _write_and_push(
            stores,
            cluster,
            decisions,
            version=versions[cluster.cluster_id],
            now=now,
            outcome=outcome,
        )
    stores.devices.set_compliance(mdm_device_id, result, now)
    if device.retired_keys:
        stores.devices.forget_retired(mdm_device_id, sorted(device.retired_keys))
    logger.info(
        "evaluated device=%s state=%s reasons=%s clusters=%d written=%d refused=%d",
        mdm_device_id,
        result.state.value,
        ",".join(r.value for r in result.reasons),
        len(clusters),
        len(outcome.written),
        outcome.refused,
    )
    return outcome


def _target_clusters(stores: ComplianceStores, cluster_id: str | None) -> list[ClusterRecord]:
    if cluster_id is None:
        return stores.clusters.list_clusters()
    return [require_cluster(stores.clusters, cluster_id)]


def _take_versions(stores: ComplianceStores, clusters: list[ClusterRecord]) -> dict[str, int]:
    return {c.cluster_id: stores.clusters.next_version(c.cluster_id) for c in clusters}


def _write_and_push(
    stores: ComplianceStores,
    cluster: ClusterRecord,
    decisions: Sequence[tuple[EntryDecision, DeviceRecord | None]],
    *,
    version: int,
    now: datetime,
    outcome: ComplianceOutcome,
) -> None:
    written: list[DeviceEntry] = []
    for decision, device in decisions:
        entry = to_entry(decision, version=version, now=now, device=device)
        if not stores.entries.put_device_entry(cluster.cluster_id, entry):
            outcome.refused += 1
            continue
        outcome.written.append((cluster.cluster_id, entry))
        written.append(entry)
    if written:
        targets: list[Connection] = stores.connections.list_for_cluster(cluster.cluster_id)
        push = PushChange(cluster_id=cluster.cluster_id, version=version, devices=tuple(written))
        report = send_to(targets, push, connections=stores.connections, poster=stores.poster)
        outcome.pushes = outcome.pushes + report
