"""MDM devices as the console shows them, and the tenant's compliance policy.

Changing the compliance policy changes which devices are compliant, so the whole tenant
is queued for re-evaluation (one ``ReevaluateAll`` message that the compliance reader
fans out page by page); the reader writes and pushes whatever changed.
"""

from __future__ import annotations

from datetime import datetime

from lambdas.domain.compliance import CompliancePolicy, DeviceRecord
from lambdas.domain.errors import InvalidInput, NotFound
from lambdas.domain.messages import sqs_id
from lambdas.domain.timefmt import format_instant
from lambdas.ports import ClusterStore, ComplianceQueue, DeviceStore
from lambdas.usecases.resync import request_reevaluation

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
    queue: ComplianceQueue,
    now: datetime,
) -> str:
    """Store the policy and queue a tenant-wide re-evaluation; return its request id.

    The re-evaluation fans out page by page in the compliance reader (``resync``), so
    this request stays O(1) however many devices the tenant has (API Gateway gives an
    integration 29 s)."""
    clusters.put_compliance_policy(policy, now)
    return request_reevaluation(
        queue=queue,
        reason="policy_change",
        request_id=sqs_id("pol-", format_instant(now)),
    )
