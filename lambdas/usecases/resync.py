"""Re-evaluate every device, page by page through the compliance queue.

Used when a cluster is created (it has no entries yet: every device and override-only
email device must be written into it) and whenever the whole tenant must be
re-evaluated. The request is one ``ReevaluateAll`` message; the compliance reader turns
each such message into one page of per-device messages plus a continuation message for
the next page, so no invocation walks the whole tenant and a failure retries one page.
Queued evaluations are ordinary messages in each device's FIFO group: safe to repeat.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from lambdas.domain.access import OverrideAction
from lambdas.domain.messages import (
    EvaluateDevice,
    EvaluateEmailDevice,
    ReevaluateAll,
    device_group,
    email_device_group,
    sqs_id,
)
from lambdas.ports import ClusterStore, ComplianceQueue, DeviceStore, ManualOverrideStore

PAGE_SIZE = 100


def _send_continuation(queue: ComplianceQueue, message: ReevaluateAll) -> None:
    queue.send(
        message.model_dump_json(),
        group_id=sqs_id("reeval-", message.request_id),
        dedup_id=sqs_id("rc-", f"{message.request_id}:{message.phase}:{message.cursor or ''}"),
    )


def request_reevaluation(
    *,
    queue: ComplianceQueue,
    reason: str,
    cluster_id: str | None = None,
    request_id: str | None = None,
) -> str:
    """Queue a tenant-wide re-evaluation (into one cluster, or all); return its id."""
    message = ReevaluateAll(
        request_id=request_id or uuid.uuid4().hex, reason=reason, cluster_id=cluster_id
    )
    _send_continuation(queue, message)
    return message.request_id


def seed_cluster(
    cluster_id: str, *, queue: ComplianceQueue, clusters: ClusterStore, now: datetime
) -> str:
    """Write every device's entry into a newly registered cluster (the API calls this
    right after ``register_cluster``; the scheduled sweep catches any cluster it
    missed); return the request id.

    Queued first and marked after, so a failure in between only seeds twice (the
    request id is the cluster's, so SQS drops a repeat within its 5-minute window, and
    re-evaluating is harmless anyway)."""
    request_id = request_reevaluation(
        queue=queue,
        reason="cluster_created",
        cluster_id=cluster_id,
        request_id=f"seed-{cluster_id}",
    )
    clusters.mark_seeded(cluster_id, now)
    return request_id


def continue_reevaluation(
    message: ReevaluateAll,
    *,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
    queue: ComplianceQueue,
) -> int:
    """Queue one page of evaluations and the continuation; return how many queued."""
    queued = 0
    if message.phase == "devices":
        page, cursor = devices.list_devices(PAGE_SIZE, message.cursor)
        for device in page:
            evaluate = EvaluateDevice(
                mdm_device_id=device.mdm_device_id,
                reason=message.reason,
                event_id=message.request_id,
                cluster_id=message.cluster_id,
            )
            queue.send(
                evaluate.model_dump_json(),
                group_id=device_group(device.mdm_device_id),
                dedup_id=sqs_id("re-", f"{message.request_id}:{device.mdm_device_id}"),
            )
            queued += 1
        following = (
            message.model_copy(update={"cursor": cursor})
            if cursor
            else message.model_copy(update={"phase": "overrides", "cursor": None})
        )
        _send_continuation(queue, following)
        return queued
    found, cursor = overrides.list_page(PAGE_SIZE, message.cursor)
    for override in found:
        if override.action is OverrideAction.CLEAR:
            continue
        # Devices the MDM knows were queued in the devices phase.
        if devices.find_by_email_device(override.user, override.device_id) is not None:
            continue
        evaluate_one = EvaluateEmailDevice(
            user=override.user, device_id=override.device_id, cluster_id=message.cluster_id
        )
        queue.send(
            evaluate_one.model_dump_json(),
            group_id=email_device_group(override.user, override.device_id),
            dedup_id=sqs_id("re-", f"{message.request_id}:{override.key}"),
        )
        queued += 1
    if cursor:
        _send_continuation(queue, message.model_copy(update={"cursor": cursor}))
    return queued
