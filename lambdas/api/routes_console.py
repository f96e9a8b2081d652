"""Console routes (``/console/v1``): who am I, the email dashboard, MDM devices and the
compliance policy (clusters are in ``routes_clusters``). Every route needs a console
admin."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from lambdas.api import models
from lambdas.api.auth import Admin
from lambdas.api.params import (
    Clusters,
    DeviceIdPath,
    Devices,
    Entries,
    MdmDeviceIdPath,
    Now,
    Overrides,
    Queue,
    UserPath,
    View,
)
from lambdas.domain.compliance import CompliancePolicy, DeviceRecord
from lambdas.domain.timefmt import format_instant, format_optional_instant
from lambdas.usecases import console_devices, dashboard
from lambdas.usecases.manual_overrides import request_override

router = APIRouter(prefix="/console/v1", tags=["console"])


@router.get("/whoami", response_model=models.WhoAmI)
def whoami(admin: Admin) -> models.WhoAmI:
    return models.WhoAmI(subject=admin.subject)


# --- Dashboard ----------------------------------------------------------------------------


@router.get("/email-devices", response_model=models.EmailDevicePage)
def list_email_devices(
    *,
    _admin: Admin,
    view: View,
    devices: Devices,
    overrides: Overrides,
    access_state: Annotated[Literal["allow", "block", "quarantine"] | None, Query()] = None,
    compliance_state: Annotated[
        Literal["compliant", "non_compliant", "unknown"] | None, Query()
    ] = None,
    q: Annotated[str | None, Query(max_length=256)] = None,
    sort: Annotated[Literal[dashboard.SORT_COLUMNS], Query()] = "last_seen",  # type: ignore[valid-type]
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    limit: Annotated[int, Query(ge=1, le=dashboard.MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> models.EmailDevicePage:
    query = dashboard.ListQuery(access_state, compliance_state, q, sort, order, limit, cursor)
    page = dashboard.list_email_devices(query, view=view, devices=devices, overrides=overrides)
    return models.EmailDevicePage(
        items=list(page.items),
        next_cursor=page.next_cursor,
        total=page.total,
    )


@router.get("/email-devices/summary", response_model=models.Summary)
def email_device_summary(
    *,
    _admin: Admin,
    view: View,
    now: Now,
    minutes: Annotated[int, Query(ge=1, le=dashboard.MAX_SERIES_MINUTES)] = 60,
) -> models.Summary:
    found = dashboard.summary(view=view, now=now, minutes=minutes)
    return models.Summary(
        counts=found.counts,
        blocked_last_hour=found.blocked_last_hour,
        series=[models.SeriesPoint(t=t, requests=r, blocks=b) for t, r, b in found.series],
    )


# ``:path``: a DeviceId is client-chosen and may contain "/" (sent as %2F, which the
# router sees decoded).
@router.get("/email-devices/{user}/{device_id:path}", response_model=models.EmailDeviceDetail)
def email_device_detail(
    *,
    user: UserPath,
    device_id: DeviceIdPath,
    _admin: Admin,
    view: View,
    devices: Devices,
    overrides: Overrides,
    clusters: Clusters,
    entries: Entries,
) -> models.EmailDeviceDetail:
    row, found = dashboard.email_device_detail(
        user,
        device_id,
        view=view,
        devices=devices,
        overrides=overrides,
        clusters=clusters,
        entries=entries,
    )
    return models.EmailDeviceDetail(
        **dashboard.as_dict(row),
        entries=[
            models.PolicyEntryView(
                cluster_id=e.cluster_id,
                access=e.entry.access,
                reason=e.entry.reason,
                source=e.entry.source.value,
                version=e.entry.version,
                updated_at=format_instant(e.entry.updated_at),
            )
            for e in found
        ],
    )


@router.post(
    "/email-devices/{user}/{device_id:path}/override",
    response_model=models.Queued,
    status_code=status.HTTP_202_ACCEPTED,
)
def override_email_device(
    *,
    user: UserPath,
    device_id: DeviceIdPath,
    body: models.OverrideRequest,
    admin: Admin,
    queue: Queue,
    now: Now,
) -> models.Queued:
    request_override(
        user, device_id, body.action, reason=body.reason, actor=admin.subject, queue=queue, now=now
    )
    return models.Queued()


# --- MDM devices and the compliance policy ----------------------------------------------


def _mdm_device(device: DeviceRecord) -> models.MdmDevice:
    return models.MdmDevice(
        mdm_device_id=device.mdm_device_id,
        user=device.user,
        eas_device_ids=list(device.eas_device_ids),
        enrollment_state=device.enrollment_state.value,
        enrolled_at=format_instant(device.enrolled_at),
        unenrolled_at=format_optional_instant(device.unenrolled_at),
        platform=device.platform,
        model=device.model,
        os_version=device.os_version,
        managed=device.managed,
        last_checkin_at=format_optional_instant(device.last_checkin_at),
        compromised=device.compromised,
        encrypted=device.encrypted,
        passcode=device.passcode,
        compliance_state=device.compliance_state.value,
        compliance_reasons=list(device.compliance_reasons),
        evaluated_at=format_optional_instant(device.evaluated_at),
    )


@router.get("/devices", response_model=models.MdmDevicePage)
def list_devices(
    *,
    _admin: Admin,
    devices: Devices,
    limit: Annotated[int, Query(ge=1, le=console_devices.MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> models.MdmDevicePage:
    page, next_cursor = console_devices.list_devices(devices, limit, cursor)
    return models.MdmDevicePage(items=[_mdm_device(d) for d in page], next_cursor=next_cursor)


@router.get("/devices/{mdm_device_id}", response_model=models.MdmDevice)
def get_device(
    *,
    mdm_device_id: MdmDeviceIdPath,
    _admin: Admin,
    devices: Devices,
) -> models.MdmDevice:
    return _mdm_device(console_devices.get_device(devices, mdm_device_id))


@router.get("/compliance-policy", response_model=CompliancePolicy)
def get_compliance_policy(_admin: Admin, clusters: Clusters) -> CompliancePolicy:
    return clusters.get_compliance_policy()


@router.put("/compliance-policy", response_model=CompliancePolicy)
def put_compliance_policy(
    *,
    policy: CompliancePolicy,
    _admin: Admin,
    clusters: Clusters,
    queue: Queue,
    now: Now,
) -> CompliancePolicy:
    """Store the policy and queue every MDM device for re-evaluation under it."""
    console_devices.put_compliance_policy(policy, clusters=clusters, queue=queue, now=now)
    return policy
