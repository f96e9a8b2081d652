"""Record a Device Services (MDM) event and queue its device for compliance evaluation.

Idempotent by ``event_id``: the event is recorded only after its device record was
updated and its message queued, so a client that retries after any failure gets the
work done exactly once in effect (re-applying the same event to the device record is a
no-op, and the FIFO queue drops a repeated deduplication id within 5 minutes; a later
duplicate evaluation writes the same state again)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from lambdas.domain.mdm_events import CheckinEvent, EnrollmentEvent, MdmEvent
from lambdas.domain.messages import EvaluateDevice, device_group, sqs_id
from lambdas.ports import ComplianceQueue, DeviceEventLog, DeviceStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventReceipt:
    event_id: str
    status: Literal["queued", "duplicate"]
    applied: bool = True  # False: a newer event had already shaped the device record


def record_device_event(
    event: MdmEvent,
    *,
    devices: DeviceStore,
    events: DeviceEventLog,
    queue: ComplianceQueue,
    now: datetime,
) -> EventReceipt:
    """Apply one MDM event. Raises ``NotFound`` (check-in or unenrollment of a device
    the MDM never enrolled here) and ``StorageError``."""
    if events.exists(event.event_id):
        return EventReceipt(event.event_id, "duplicate", applied=False)
    if isinstance(event, EnrollmentEvent):
        applied = devices.apply_enrollment(event)
    elif isinstance(event, CheckinEvent):
        applied = devices.apply_checkin(event)
    else:
        applied = devices.apply_unenrollment(event)
    message = EvaluateDevice(
        mdm_device_id=event.mdm_device_id, reason=event.type, event_id=event.event_id
    )
    queue.send(
        message.model_dump_json(),
        group_id=device_group(event.mdm_device_id),
        dedup_id=sqs_id("evt-", event.event_id),
    )
    recorded = events.record(event.event_id, event.model_dump_json(), now, event.mdm_device_id)
    logger.info(
        "device event %s: type=%s device=%s applied=%s",
        "queued" if recorded else "raced a duplicate",
        event.type,
        event.mdm_device_id,
        applied,
    )
    return EventReceipt(event.event_id, "queued" if recorded else "duplicate", applied)
