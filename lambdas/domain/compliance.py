"""Compliance evaluation: a pure function of the MDM device record, the tenant's
compliance policy and now.

Theory of operation
-------------------
The MDM reports identity at enrollment and posture (compromised, encrypted, passcode)
at each scheduled check-in. A posture fact the MDM has not reported yet (``None``) does
not make a device non-compliant on its own: a freshly enrolled device is compliant
until its first check-in says otherwise, and the check-in age (counted from enrollment
when there was no check-in yet) bounds how long it may stay so without reporting. A
device that stops checking in therefore loses access once ``max_checkin_age_s`` has
passed: the scheduled check-in sweep re-queues it and this function says so.

Unenrolled devices are never compliant; the access decision (``domain.access``) turns
them into BLOCK entries with their own source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class EnrollmentState(StrEnum):
    ENROLLED = "enrolled"
    UNENROLLED = "unenrolled"


class ComplianceState(StrEnum):
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    UNKNOWN = "unknown"  # never evaluated


class Reason(StrEnum):
    """Why a device is non-compliant (stable codes; ``REASON_TEXT`` says it in words)."""

    UNENROLLED = "unenrolled"
    NOT_MANAGED = "not_managed"
    COMPROMISED = "compromised"
    NOT_ENCRYPTED = "not_encrypted"
    NO_PASSCODE = "no_passcode"
    CHECKIN_STALE = "checkin_stale"


REASON_TEXT: dict[Reason, str] = {
    Reason.UNENROLLED: "unenrolled from the MDM",
    Reason.NOT_MANAGED: "not managed by the MDM",
    Reason.COMPROMISED: "compromised (jailbroken or rooted)",
    Reason.NOT_ENCRYPTED: "storage not encrypted",
    Reason.NO_PASSCODE: "no passcode",
    Reason.CHECKIN_STALE: "last check-in too old",
}


class CompliancePolicy(BaseModel):
    """Which posture facts make a device non-compliant (tenant-wide, set in the
    console). Defaults follow the seed: compromised, unencrypted or passcode-less
    devices, and devices that have not checked in for 24 hours, lose mail access."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    block_compromised: bool = True
    require_encryption: bool = True
    require_passcode: bool = True
    require_managed: bool = True
    # At least 5 minutes (the schedule runs every 15: anything shorter would flap);
    # at most 90 days.
    max_checkin_age_s: int = Field(default=86_400, ge=300, le=90 * 86_400)


@dataclass(frozen=True)
class DeviceRecord:
    """An MDM device as stored: identity from enrollment, posture from check-ins.

    ``user`` and ``eas_device_ids`` are normalised (``seg_contract.identity``).
    ``retired_keys`` are entry keys this device owned before a re-enrollment changed
    its user or EAS device ids; their entries are blocked at the next evaluation.
    """

    mdm_device_id: str
    user: str
    eas_device_ids: tuple[str, ...]
    enrollment_state: EnrollmentState
    enrolled_at: datetime
    enrollment_changed_at: datetime  # the newest enrollment or unenrollment event
    platform: str = ""
    model: str = ""
    os_version: str = ""
    managed: bool = True
    unenrolled_at: datetime | None = None
    last_checkin_at: datetime | None = None
    compromised: bool | None = None
    encrypted: bool | None = None
    passcode: bool | None = None
    compliance_state: ComplianceState = ComplianceState.UNKNOWN
    compliance_reasons: tuple[str, ...] = ()
    evaluated_at: datetime | None = None
    retired_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def enrolled(self) -> bool:
        return self.enrollment_state is EnrollmentState.ENROLLED

    @property
    def checkin_reference(self) -> datetime:
        """The instant the check-in age counts from."""
        return self.last_checkin_at or self.enrolled_at


@dataclass(frozen=True)
class ComplianceResult:
    state: ComplianceState
    reasons: tuple[Reason, ...] = ()

    @property
    def compliant(self) -> bool:
        return self.state is ComplianceState.COMPLIANT

    def describe(self) -> str:
        if self.compliant:
            return "compliant"
        return "non-compliant: " + "; ".join(REASON_TEXT[r] for r in self.reasons)


def evaluate_compliance(
    device: DeviceRecord, policy: CompliancePolicy, now: datetime
) -> ComplianceResult:
    """Evaluate one device. Every failing rule is listed, in a fixed order."""
    reasons: list[Reason] = []
    if not device.enrolled:
        reasons.append(Reason.UNENROLLED)
    if policy.require_managed and not device.managed:
        reasons.append(Reason.NOT_MANAGED)
    if policy.block_compromised and device.compromised is True:
        reasons.append(Reason.COMPROMISED)
    if policy.require_encryption and device.encrypted is False:
        reasons.append(Reason.NOT_ENCRYPTED)
    if policy.require_passcode and device.passcode is False:
        reasons.append(Reason.NO_PASSCODE)
    if device.enrolled and is_checkin_stale(device, policy, now):
        reasons.append(Reason.CHECKIN_STALE)
    if reasons:
        return ComplianceResult(ComplianceState.NON_COMPLIANT, tuple(reasons))
    return ComplianceResult(ComplianceState.COMPLIANT)


def is_checkin_stale(device: DeviceRecord, policy: CompliancePolicy, now: datetime) -> bool:
    return now - device.checkin_reference > timedelta(seconds=policy.max_checkin_age_s)


def stale_cutoff(policy: CompliancePolicy, now: datetime) -> datetime:
    """Devices whose check-in reference is before this instant are stale."""
    return now - timedelta(seconds=policy.max_checkin_age_s)
