"""The scheduled check-in sweep (the seed's Scheduler): find enrolled devices whose
last check-in is older than the compliance policy allows and queue them for
re-evaluation, so a phone that stops checking in loses mail access without anyone
acting. It also seeds any cluster whose existing devices were never queued for
evaluation into it (``resync.seed_cluster``), so a new cluster cannot stay empty.

Only devices last evaluated as compliant (or never evaluated) are queued: one already
non-compliant is blocked already, and re-queueing it every sweep would only churn
versions. The deduplication id names the check-in instant, so a device that is still
stale at the next sweep is queued again (its earlier message may have failed), while
two sweeps within SQS's 5-minute window do not queue it twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from lambdas.domain.compliance import ComplianceState, stale_cutoff
from lambdas.domain.messages import EvaluateDevice, device_group, sqs_id
from lambdas.domain.timefmt import format_instant
from lambdas.ports import ClusterStore, ComplianceQueue, DeviceStore
from lambdas.usecases.resync import seed_cluster

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    stale: int  # enrolled devices past the check-in age
    queued: int  # of those, queued for re-evaluation
    clusters_seeded: int = 0  # clusters nobody had seeded with the existing devices


def sweep_stale_checkins(
    *, devices: DeviceStore, clusters: ClusterStore, queue: ComplianceQueue, now: datetime
) -> SweepReport:
    seeded = 0
    for cluster in clusters.list_clusters():
        if cluster.seeded_at is None:
            seed_cluster(cluster.cluster_id, queue=queue, clusters=clusters, now=now)
            seeded += 1
    policy = clusters.get_compliance_policy()
    cutoff = stale_cutoff(policy, now)
    stale = queued = 0
    for device in devices.iter_stale(cutoff):
        stale += 1
        if device.compliance_state is ComplianceState.NON_COMPLIANT:
            continue
        reference = format_instant(device.checkin_reference)
        message = EvaluateDevice(
            mdm_device_id=device.mdm_device_id,
            reason="stale_checkin",
            event_id=f"stale:{reference}",
        )
        queue.send(
            message.model_dump_json(),
            group_id=device_group(device.mdm_device_id),
            dedup_id=sqs_id("stale-", f"{device.mdm_device_id}@{reference}"),
        )
        queued += 1
    logger.info(
        "check-in sweep: cutoff=%s stale=%d queued=%d", format_instant(cutoff), stale, queued
    )
    return SweepReport(stale=stale, queued=queued, clusters_seeded=seeded)
