"""The device and override stores, journalling for the roster what they change.

``DeviceStore`` and ``ManualOverrideStore`` wrapped so that every write also appends the
email-device keys it touched to the roster journal (``roster.journal_keys``): whoever
writes a device record or an override (the MDM intake in the API, the compliance
reader) keeps the console's roster current without knowing it exists. The consumer reads
those keys' current MDM facts and override, so the journal entry only names them.

The keys of a device are the ones it owns and the ones it retired (a re-enrollment that
moved an EAS id must update both rows); an evaluation that leaves the compliance state as
it was journals nothing (a tenant-wide re-evaluation changes few devices).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from lambdas.domain.access import ManualOverride, owned_keys
from lambdas.domain.compliance import ComplianceResult, DeviceRecord
from lambdas.domain.mdm_events import CheckinEvent, EnrollmentEvent, UnenrollmentEvent
from lambdas.ports import DeviceStore, ManualOverrideStore, RosterJournal
from lambdas.usecases.roster import journal_keys
from seg_contract import entry_key


def device_keys(device: DeviceRecord | None) -> set[str]:
    if device is None:
        return set()
    return set(owned_keys(device)) | set(device.retired_keys)


class JournaledDevices:
    """A ``DeviceStore`` that journals the email devices each write touched."""

    def __init__(self, inner: DeviceStore, journal: RosterJournal) -> None:
        self._inner = inner
        self._journal = journal

    def _journal_device(self, mdm_device_id: str, also: set[str] | None = None) -> None:
        keys = device_keys(self._inner.get(mdm_device_id)) | (also or set())
        journal_keys(self._journal, keys)

    # --- writes ------------------------------------------------------------------

    def apply_enrollment(self, event: EnrollmentEvent) -> bool:
        before = device_keys(self._inner.get(event.mdm_device_id))
        applied = self._inner.apply_enrollment(event)
        event_keys = {entry_key(event.user, d) for d in event.eas_device_ids}
        self._journal_device(event.mdm_device_id, before | event_keys)
        return applied

    def apply_checkin(self, event: CheckinEvent) -> bool:
        applied = self._inner.apply_checkin(event)
        self._journal_device(event.mdm_device_id)
        return applied

    def apply_unenrollment(self, event: UnenrollmentEvent) -> bool:
        applied = self._inner.apply_unenrollment(event)
        self._journal_device(event.mdm_device_id)
        return applied

    def set_compliance(
        self, mdm_device_id: str, result: ComplianceResult, evaluated_at: datetime
    ) -> None:
        before = self._inner.get(mdm_device_id)
        self._inner.set_compliance(mdm_device_id, result, evaluated_at)
        if before is None or before.compliance_state != result.state:
            self._journal_device(mdm_device_id)

    def forget_retired(self, mdm_device_id: str, keys: Sequence[str]) -> None:
        self._inner.forget_retired(mdm_device_id, keys)
        journal_keys(self._journal, keys)

    # --- reads -------------------------------------------------------------------

    def get(self, mdm_device_id: str) -> DeviceRecord | None:
        return self._inner.get(mdm_device_id)

    def find_by_email_device(self, user: str, device_id: str) -> str | None:
        return self._inner.find_by_email_device(user, device_id)

    def iter_stale(self, cutoff: datetime) -> Iterator[DeviceRecord]:
        return self._inner.iter_stale(cutoff)

    def list_devices(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[DeviceRecord], str | None]:
        return self._inner.list_devices(limit, cursor)


class JournaledOverrides:
    """A ``ManualOverrideStore`` that journals the email device of every put."""

    def __init__(self, inner: ManualOverrideStore, journal: RosterJournal) -> None:
        self._inner = inner
        self._journal = journal

    def put(self, override: ManualOverride) -> bool:
        stored = self._inner.put(override)
        # Journalled even when refused: a redelivered request after a crash between the
        # write and the journal must still reach the roster.
        journal_keys(self._journal, [override.key])
        return stored

    def get(self, user: str, device_id: str) -> ManualOverride | None:
        return self._inner.get(user, device_id)

    def list_page(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[ManualOverride], str | None]:
        return self._inner.list_page(limit, cursor)
