"""What the compliance reader does with one message from the compliance queue.

Theory of operation
-------------------
For every target cluster the reader first *takes* the cluster's next policy version
(an atomic counter), then reads its inputs (the device record, the overrides, the
cluster's settings), evaluates, and commits each cluster's entries under its version
(``lambdas.usecases.policy_versions``: one transaction with the version's log record,
each entry a compare-and-swap on the version it replaces). Taking the version before
reading is what makes concurrent readers safe: if reader B took a higher version than
reader A, B read after A took its version, hence after A's input (device record or
override) was stored, so the entry that wins (B's) reflects both; A's change to a key B
already wrote is stale and dropped. When a version was fenced (its commit came too
late), the reader takes a new one and reads its inputs again, so the argument still
holds. A message processed twice writes the same state again under a new version.
Every committed version is pushed to every connection of its cluster (``PushChange``,
even when everything in it was stale: it still moves the nodes' applied version on).

All entries one message writes in one cluster share that cluster's version: a delta
"since N" is still exact, and a gateway applies entries per key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from lambdas.domain.access import (
    ManualOverride,
    decide,
    owned_keys,
    split_key,
    to_entry,
)
from lambdas.domain.compliance import ComplianceResult, DeviceRecord, evaluate_compliance
from lambdas.domain.errors import NotFound
from lambdas.domain.messages import (
    ComplianceMessage,
    EvaluateDevice,
    ManualOverrideRequest,
    ReevaluateAll,
)
from lambdas.domain.policy_commit import Proposal
from lambdas.domain.records import ClusterRecord
from lambdas.ports import (
    ClusterStore,
    ComplianceQueue,
    ConnectionPoster,
    ConnectionStore,
    DeviceStore,
    ManualOverrideStore,
    PolicyEntryStore,
    PolicyLog,
)
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.policy_versions import Committed, VersionStores, release, write_version
from lambdas.usecases.push import PushReport
from lambdas.usecases.resync import continue_reevaluation
from seg_contract import Access, DeviceEntry

logger = logging.getLogger(__name__)

Inputs = TypeVar("Inputs")


@dataclass(frozen=True)
class ComplianceStores:
    devices: DeviceStore
    entries: PolicyEntryStore
    clusters: ClusterStore
    overrides: ManualOverrideStore
    connections: ConnectionStore
    poster: ConnectionPoster
    log: PolicyLog
    signing: PolicySigning  # every committed version's push is signed
    queue: ComplianceQueue | None = None  # for re-evaluation fan-out (ReevaluateAll)

    @property
    def versions(self) -> VersionStores:
        return VersionStores(
            clusters=self.clusters,
            entries=self.entries,
            log=self.log,
            connections=self.connections,
            poster=self.poster,
            signing=self.signing,
        )


@dataclass
class ComplianceOutcome:
    """What one message changed: entries written per cluster, stale writes refused."""

    written: list[tuple[str, DeviceEntry]] = field(default_factory=list)
    refused: int = 0  # a newer entry was stored already
    queued: int = 0  # evaluations queued by a ReevaluateAll page
    pushes: PushReport = field(default_factory=PushReport)
    versions: list[tuple[str, int]] = field(default_factory=list)  # committed, per cluster

    def add(self, committed: Committed) -> None:
        self.written += [(committed.cluster_id, e) for e in committed.plan.written_devices]
        self.refused += len(committed.plan.dropped)
        self.pushes = self.pushes + committed.pushes
        self.versions.append((committed.cluster_id, committed.version))


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

    def read() -> _EmailInputs:
        return _EmailInputs(
            unknown_actions=_unknown_actions(stores, clusters),
            override=stores.overrides.get(user, device_id),
        )

    def build(cluster: ClusterRecord, inputs: _EmailInputs, version: int) -> Proposal:
        decision = decide(
            user,
            device_id,
            device=None,
            compliance=None,
            override=inputs.override,
            unknown_device_action=inputs.unknown_action(cluster),
        )
        return Proposal(devices=(to_entry(decision, version=version, now=now, device=None),))

    outcome = ComplianceOutcome()
    _write_clusters(stores, clusters, read, build, now=now, outcome=outcome)
    return outcome


def evaluate_device(
    mdm_device_id: str, stores: ComplianceStores, now: datetime, cluster_id: str | None
) -> ComplianceOutcome:
    clusters = _target_clusters(stores, cluster_id)

    def read() -> _DeviceInputs:
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
        return _DeviceInputs(
            unknown_actions=_unknown_actions(stores, clusters),
            device=device,
            result=result,
            keys=keys,
            overrides=overrides,
        )

    def build(cluster: ClusterRecord, inputs: _DeviceInputs, version: int) -> Proposal:
        entries = tuple(
            to_entry(
                decide(
                    *split_key(key),
                    device=inputs.device,
                    compliance=inputs.result,
                    override=inputs.overrides[key],
                    unknown_device_action=inputs.unknown_action(cluster),
                ),
                version=version,
                now=now,
                device=inputs.device,
            )
            for key in inputs.keys
        )
        return Proposal(devices=entries)

    outcome = ComplianceOutcome()
    inputs = _write_clusters(stores, clusters, read, build, now=now, outcome=outcome)
    stores.devices.set_compliance(mdm_device_id, inputs.result, now)
    if inputs.device.retired_keys:
        stores.devices.forget_retired(mdm_device_id, sorted(inputs.device.retired_keys))
    logger.info(
        "evaluated device=%s state=%s reasons=%s clusters=%d written=%d refused=%d",
        mdm_device_id,
        inputs.result.state.value,
        ",".join(r.value for r in inputs.result.reasons),
        len(clusters),
        len(outcome.written),
        outcome.refused,
    )
    return outcome


@dataclass(frozen=True)
class _Actions:
    """Each cluster's unknown-device action, read after the versions were taken."""

    unknown_actions: dict[str, Access]

    def unknown_action(self, cluster: ClusterRecord) -> Access:
        return self.unknown_actions.get(cluster.cluster_id, cluster.settings.unknown_device_action)


@dataclass(frozen=True)
class _EmailInputs(_Actions):
    override: ManualOverride | None


@dataclass(frozen=True)
class _DeviceInputs(_Actions):
    device: DeviceRecord
    result: ComplianceResult
    keys: list[str]
    overrides: dict[str, ManualOverride | None]


def _unknown_actions(stores: ComplianceStores, clusters: list[ClusterRecord]) -> dict[str, Access]:
    """Read again after the versions were taken: a settings change committed before
    them must decide the unknown devices of this evaluation."""
    return {
        c.cluster_id: require_cluster(stores.clusters, c.cluster_id).settings.unknown_device_action
        for c in clusters
    }


def _target_clusters(stores: ComplianceStores, cluster_id: str | None) -> list[ClusterRecord]:
    if cluster_id is None:
        return stores.clusters.list_clusters()
    return [require_cluster(stores.clusters, cluster_id)]


class _Reader(Generic[Inputs]):
    """The inputs read once for every cluster after all versions were taken; a cluster
    whose commit must be redone (conflict, or a new version after a fence) reads anew."""

    def __init__(self, read: Callable[[], Inputs]) -> None:
        self._read = read
        self.first: Inputs | None = None

    def shared(self) -> Inputs:
        if self.first is None:
            self.first = self._read()
        return self.first

    def proposer(
        self, cluster: ClusterRecord, build: Callable[[ClusterRecord, Inputs, int], Proposal]
    ) -> Callable[[int], Proposal]:
        calls = 0

        def propose(version: int) -> Proposal:
            nonlocal calls
            inputs = self.shared() if calls == 0 else self._read()
            calls += 1
            return build(cluster, inputs, version)

        return propose


def _write_clusters(
    stores: ComplianceStores,
    clusters: list[ClusterRecord],
    read: Callable[[], Inputs],
    build: Callable[[ClusterRecord, Inputs, int], Proposal],
    *,
    now: datetime,
    outcome: ComplianceOutcome,
) -> Inputs:
    """Take every cluster's version, then read the inputs, then commit each cluster's
    proposal; a version taken and not committed is given up (abandoned) at once."""
    reader: _Reader[Inputs] = _Reader(read)
    taken: dict[str, int] = {}
    try:
        for cluster in clusters:
            taken[cluster.cluster_id] = stores.clusters.next_version(cluster.cluster_id)
        inputs = reader.shared()
        for cluster in clusters:
            version = taken.pop(cluster.cluster_id)
            committed = write_version(
                cluster.cluster_id,
                reader.proposer(cluster, build),
                stores=stores.versions,
                now=now,
                version=version,
            )
            outcome.add(committed)
        return inputs
    finally:
        for cluster_id, version in taken.items():
            release(cluster_id, version, log=stores.log, now=now)
