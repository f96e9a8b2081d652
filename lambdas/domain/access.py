"""The access decision for one email device (user, EAS DeviceId), and the policy entry
that carries it to the gateways.

Precedence (the seed's console semantics): a manual override from the console wins;
then an unenrolled device (or an EAS id its device no longer owns) is blocked; then the
compliance evaluation decides. An email device with no MDM record and no override gets
the cluster's unknown-device action, which is why decisions are computed per cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from lambdas.domain.compliance import ComplianceResult, DeviceRecord
from seg_contract import Access, DeviceEntry, EntrySource, entry_key


class OverrideAction(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    CLEAR = "clear"


@dataclass(frozen=True)
class ManualOverride:
    """An admin's standing allow/block for one email device (``CLEAR`` is stored as a
    tombstone so that an older, redelivered request cannot resurrect an override)."""

    user: str
    device_id: str
    action: OverrideAction
    reason: str
    actor: str
    updated_at: datetime

    @property
    def key(self) -> str:
        return entry_key(self.user, self.device_id)

    @property
    def effective(self) -> bool:
        return self.action is not OverrideAction.CLEAR


@dataclass(frozen=True)
class EntryDecision:
    """What one email device's entry should say, before it gets a version."""

    user: str
    device_id: str
    access: Access
    reason: str
    source: EntrySource

    @property
    def key(self) -> str:
        return entry_key(self.user, self.device_id)


def decide(
    user: str,
    device_id: str,
    *,
    device: DeviceRecord | None,
    compliance: ComplianceResult | None,
    override: ManualOverride | None,
    unknown_device_action: Access,
) -> EntryDecision:
    """The entry for one email device. ``device`` is the MDM record that owns (or owned)
    the email device, ``compliance`` its evaluation (None when ``device`` is None)."""
    if override is not None and override.effective:
        access = Access.ALLOW if override.action is OverrideAction.ALLOW else Access.BLOCK
        why = f"manual {override.action.value} by {override.actor or 'an admin'}"
        if override.reason:
            why = f"{why}: {override.reason}"
        return EntryDecision(user, device_id, access, why[:512], EntrySource.MANUAL)
    if device is None or compliance is None:
        return EntryDecision(
            user,
            device_id,
            unknown_device_action,
            "not enrolled in the MDM: the cluster's unknown-device action applies",
            EntrySource.COMPLIANCE,
        )
    if not device.enrolled:
        return EntryDecision(
            user, device_id, Access.BLOCK, "unenrolled from the MDM", EntrySource.UNENROLLED
        )
    if entry_key(user, device_id) not in owned_keys(device):
        return EntryDecision(
            user,
            device_id,
            Access.BLOCK,
            "no longer enrolled: the MDM device now reports another user or device id",
            EntrySource.UNENROLLED,
        )
    access = Access.ALLOW if compliance.compliant else Access.BLOCK
    return EntryDecision(
        user, device_id, access, compliance.describe()[:512], EntrySource.COMPLIANCE
    )


def owned_keys(device: DeviceRecord) -> tuple[str, ...]:
    """The entry keys an MDM device currently owns: one per EAS device id."""
    return tuple(entry_key(device.user, d) for d in device.eas_device_ids)


def split_key(key: str) -> tuple[str, str]:
    user, _, device_id = key.partition("\x1f")
    return user, device_id


def to_entry(
    decision: EntryDecision, *, version: int, now: datetime, device: DeviceRecord | None
) -> DeviceEntry:
    """The versioned contract entry for a decision."""
    return DeviceEntry(
        user=decision.user,
        device_id=decision.device_id,
        access=decision.access,
        reason=decision.reason,
        source=decision.source,
        version=version,
        updated_at=now,
        mdm_device_id=device.mdm_device_id if device else "",
        device_type=(device.platform if device else "")[:256],
        model=(device.model if device else "")[:256],
        os=(device.os_version if device else "")[:256],
    )
