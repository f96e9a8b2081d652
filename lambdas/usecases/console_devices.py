"""MDM devices as the console shows them, and the tenant's compliance policy.

Changing the compliance policy changes which devices are compliant, so every MDM device
is queued for re-evaluation (one message per device, in its own FIFO group); the
compliance reader writes and pushes whatever changed.
"""

from __future__ import annotations

from datetime import datetime

from lambdas.domain.compliance import CompliancePolicy, DeviceRecord
from lambdas.domain.messages import EvaluateDevice, device_group, sqs_id
from lambdas.domain.timefmt import format_instant
from lambdas.ports import ClusterStore, ComplianceQueue, DeviceStore
from lambdas.usecases.errors import InvalidInput, NotFound

MAX_LIMIT = 500


def list_devices(
    devices: DeviceStore, limit: int, cursor: str | None
) -> tuple[list[DeviceRecord], str | None]:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    return devices.list_devices(limit, cursor)


def get_device(devices: DeviceStore, mdm_device_id: str) -> DeviceRecord:
    device = devices.get(mdm_device_id)
    if device is None:
        raise NotFound(f"MDM device {mdm_device_id} not found")
    return device


def put_compliance_policy(
    policy: CompliancePolicy,
    *,
    clusters: ClusterStore,
    devices: DeviceStore,
    queue: ComplianceQueue,
    now: datetime,
) -> int:
    """Store the policy and queue every device for re-evaluation; return how many."""
    clusters.put_compliance_policy(policy, now)
    stamp = format_instant(now)
    queued = 0
    cursor: str | None = None
    while True:
        page, cursor = devices.list_devices(1000, cursor)
        for device in page:
            message = EvaluateDevice(mdm_device_id=device.mdm_device_id, reason="policy_change")
            queue.send(
                message.model_dump_json(),
                group_id=device_group(device.mdm_device_id),
                dedup_id=sqs_id("pol-", f"{device.mdm_device_id}@{stamp}"),
            )
            queued += 1
        if cursor is None:
            return queued
