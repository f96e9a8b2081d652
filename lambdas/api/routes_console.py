"""Console routes (``/console/v1``): who am I, MDM devices and the compliance policy.
Email devices are in ``routes_devices``, clusters in ``routes_clusters``, the audit trail
and notices in ``routes_audit``. Each route names the role it needs (``auth``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lambdas.api import models
from lambdas.api.auth import AdminAudit, Viewer
from lambdas.api.deps import Clusters, Devices, Queue
from lambdas.api.params import MdmDeviceIdPath
from lambdas.domain.compliance import CompliancePolicy, DeviceRecord
from lambdas.domain.roles import PERMISSIONS
from lambdas.domain.timefmt import format_instant, format_optional_instant
from lambdas.usecases import console_devices

router = APIRouter(prefix="/console/v1", tags=["console"])


@router.get("/whoami", response_model=models.WhoAmI)
def whoami(user: Viewer) -> models.WhoAmI:
    return models.WhoAmI(
        subject=user.subject,
        role=user.role.label,  # type: ignore[arg-type]  # one of the three labels
        permissions=list(PERMISSIONS[user.role]),
    )


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
    _user: Viewer,
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
    _user: Viewer,
    devices: Devices,
) -> models.MdmDevice:
    return _mdm_device(console_devices.get_device(devices, mdm_device_id))


@router.get("/compliance-policy", response_model=CompliancePolicy)
def get_compliance_policy(_user: Viewer, clusters: Clusters) -> CompliancePolicy:
    return clusters.get_compliance_policy()


@router.put("/compliance-policy", response_model=CompliancePolicy)
def put_compliance_policy(
    *,
    policy: CompliancePolicy,
    audit: AdminAudit,
    clusters: Clusters,
    queue: Queue,
) -> CompliancePolicy:
    """Store the policy and queue every MDM device for re-evaluation under it."""
    before = clusters.get_compliance_policy()
    console_devices.put_compliance_policy(policy, clusters=clusters, queue=queue, now=audit.now)
    audit.record(
        "compliance_policy.update",
        "tenant",
        before=before.model_dump(),
        after=policy.model_dump(),
    )
    return policy
