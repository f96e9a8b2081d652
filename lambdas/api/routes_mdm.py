"""Device Services (MDM) routes: device events, recorded and queued for compliance
evaluation (idempotent by ``event_id``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, status

from lambdas.api.auth import DeviceServicesCaller, device_services
from lambdas.api.deps import (
    clock,
    compliance_queue,
    device_event_log,
    device_store,
)
from lambdas.api.models import EventQueued
from lambdas.domain.mdm_events import MdmEvent
from lambdas.ports import ComplianceQueue, DeviceEventLog, DeviceStore
from lambdas.usecases.device_events import record_device_event

router = APIRouter(prefix="/mdm/v1", tags=["device services"])


@router.post(
    "/events",
    response_model=EventQueued,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Post an enrollment, check-in or unenrollment (idempotent by event_id)",
)
def post_event(
    *,
    event: Annotated[MdmEvent, Body()],
    _caller: Annotated[DeviceServicesCaller, Depends(device_services)],
    devices: Annotated[DeviceStore, Depends(device_store)],
    events: Annotated[DeviceEventLog, Depends(device_event_log)],
    queue: Annotated[ComplianceQueue, Depends(compliance_queue)],
    now: Annotated[datetime, Depends(clock)],
) -> EventQueued:
    receipt = record_device_event(event, devices=devices, events=events, queue=queue, now=now)
    return EventQueued(event_id=receipt.event_id, status=receipt.status)
