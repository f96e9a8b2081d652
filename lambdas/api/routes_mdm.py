"""Device Services (MDM) routes: device events, recorded and queued for compliance
evaluation (idempotent by ``event_id``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from lambdas.api.auth import DeviceServices
from lambdas.api.deps import DeviceEvents, Devices, Now, Queue
from lambdas.api.models import EventQueued
from lambdas.domain.mdm_events import MdmEvent
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
    _caller: DeviceServices,
    devices: Devices,
    events: DeviceEvents,
    queue: Queue,
    now: Now,
) -> EventQueued:
    receipt = record_device_event(event, devices=devices, events=events, queue=queue, now=now)
    return EventQueued(event_id=receipt.event_id, status=receipt.status)
