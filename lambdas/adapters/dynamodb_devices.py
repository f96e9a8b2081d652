"""MDM device records on the devices table (partition ``mdm_device_id``).

Two kinds of items share the table:

- a *device* (``kind = "device"``): identity, posture, compliance. While enrolled it
  carries ``checkin_partition = "enrolled"``, so the sparse ``by_checkin`` index holds
  exactly the enrolled devices, ordered by ``last_checkin_at`` (the check-in reference:
  the enrollment instant until the first check-in; ``checked_in`` says which).
- an *email link* (``kind = "email_link"``, key ``#email<US><entry key>``): which device
  owns an email device (user, EAS DeviceId). A device may report several EAS ids and a
  GSI indexes one value per item, so each id gets its own small item, found through the
  ``by_email_device`` index (attribute ``email_device_key``).

Events older than what the record already reflects change nothing: enrollment and
unenrollment compare with ``enrollment_changed_at``, check-ins with ``last_checkin_at``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    expression_values,
    get_bool,
    get_s,
    get_str_list,
    get_str_set,
    one_page,
    paged,
    s,
    to_item,
    translated,
)
from lambdas.domain.access import owned_keys
from lambdas.domain.compliance import (
    ComplianceResult,
    ComplianceState,
    DeviceRecord,
    EnrollmentState,
)
from lambdas.domain.cursors import decode_cursor, encode_cursor
from lambdas.domain.errors import NotFound, StorageError
from lambdas.domain.mdm_events import CheckinEvent, EnrollmentEvent, UnenrollmentEvent
from lambdas.domain.timefmt import format_instant, parse_instant
from seg_contract import entry_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "device store"
ENROLLED_PARTITION = "enrolled"
LINK_PREFIX = "#email\x1f"
_MAX_ATTEMPTS = 5


def _link_key(key: str) -> str:
    return LINK_PREFIX + key


def parse_device(item: Item) -> DeviceRecord:
    checked_in = bool(get_bool(item, "checked_in"))
    unenrolled = get_s(item, "unenrolled_at")
    evaluated = get_s(item, "evaluated_at")
    return DeviceRecord(
        mdm_device_id=get_s(item, "mdm_device_id"),
        user=get_s(item, "user"),
        eas_device_ids=tuple(get_str_list(item, "eas_device_ids")),
        enrollment_state=EnrollmentState(get_s(item, "enrollment_state")),
        enrolled_at=parse_instant(get_s(item, "enrolled_at")),
        enrollment_changed_at=parse_instant(get_s(item, "enrollment_changed_at")),
        platform=get_s(item, "platform"),
        model=get_s(item, "model"),
        os_version=get_s(item, "os_version"),
        managed=get_bool(item, "managed") is not False,
        unenrolled_at=parse_instant(unenrolled) if unenrolled else None,
        last_checkin_at=parse_instant(get_s(item, "last_checkin_at")) if checked_in else None,
        compromised=get_bool(item, "compromised"),
        encrypted=get_bool(item, "encrypted"),
        passcode=get_bool(item, "passcode"),
        compliance_state=ComplianceState(get_s(item, "compliance_state", "unknown")),
        compliance_reasons=tuple(get_str_list(item, "compliance_reasons")),
        evaluated_at=parse_instant(evaluated) if evaluated else None,
        retired_keys=get_str_set(item, "retired_keys"),
    )


class DynamoDbDevices:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    # --- reads ---------------------------------------------------------------------

    def _get_item(self, key: str) -> Item | None:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table, Key={"mdm_device_id": s(key)}, ConsistentRead=True
            )
        item = response.get("Item")
        return dict(item) if item else None

    def get(self, mdm_device_id: str) -> DeviceRecord | None:
        item = self._get_item(mdm_device_id)
        if item is None or get_s(item, "kind") != "device":
            return None
        return parse_device(item)

    def find_by_email_device(self, user: str, device_id: str) -> str | None:
        # The index is eventually consistent; the link item itself is read consistently.
        item = self._get_item(_link_key(entry_key(user, device_id)))
        return get_s(item, "owner") or None if item else None

    def iter_stale(self, cutoff: datetime) -> Iterator[DeviceRecord]:
        for item in paged(
            self._client,
            "query",
            STORE,
            TableName=self._table,
            IndexName="by_checkin",
            KeyConditionExpression="checkin_partition = :p AND last_checkin_at < :cutoff",
            ExpressionAttributeValues={
                ":p": s(ENROLLED_PARTITION),
                ":cutoff": s(format_instant(cutoff)),
            },
        ):
            # The index may project keys only: read the record itself then.
            if "kind" in item:
                yield parse_device(item)
            else:
                record = self.get(get_s(item, "mdm_device_id"))
                if record is not None:
                    yield record

    def list_devices(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[DeviceRecord], str | None]:
        """Up to ``limit`` devices. A Scan's limit counts the link items it skips too,
        so pages are scanned until ``limit`` devices are found; the cursor is then the
        key of the last device returned."""
        limit = max(1, min(limit, 1000))
        start: Item | None = decode_cursor(cursor, dict) if cursor else None
        devices: list[DeviceRecord] = []
        while True:
            items, start = one_page(
                self._client,
                "scan",
                STORE,
                start,
                TableName=self._table,
                Limit=limit,
                FilterExpression="kind = :device",
                ExpressionAttributeValues=expression_values({":device": "device"}),
            )
            for i, item in enumerate(items):
                devices.append(parse_device(item))
                if len(devices) == limit:
                    last = to_item({"mdm_device_id": devices[-1].mdm_device_id})
                    more = start is not None or i < len(items) - 1
                    return devices, encode_cursor(last) if more else None
            if start is None:
                return devices, None

    # --- event application ---------------------------------------------------------

    def apply_enrollment(self, event: EnrollmentEvent) -> bool:
        for _ in range(_MAX_ATTEMPTS):
            old_item = self._get_item(event.mdm_device_id)
            old = parse_device(old_item) if old_item else None
            if old is not None and old.enrollment_changed_at > event.occurred_at:
                return False
            try:
                self._put_enrollment(event, old)
            except ConditionFailed:
                continue  # raced another writer: read again
            self._write_links(event, old)
            return True
        raise StorageError(f"{STORE}: enrollment of {event.mdm_device_id} kept racing")

    def _put_enrollment(self, event: EnrollmentEvent, old: DeviceRecord | None) -> None:
        at = format_instant(event.occurred_at)
        new_keys = {entry_key(event.user, d) for d in event.eas_device_ids}
        previous = set(owned_keys(old)) | set(old.retired_keys) if old else set()
        retired = sorted(previous - new_keys)
        attributes: dict[str, Any] = {
            "mdm_device_id": event.mdm_device_id,
            "kind": "device",
            "user": event.user,
            "eas_device_ids": list(event.eas_device_ids),
            "platform": event.platform,
            "model": event.model,
            "os_version": event.os_version,
            "managed": event.managed,
            "enrollment_state": EnrollmentState.ENROLLED.value,
            "enrolled_at": at,
            "enrollment_changed_at": at,
            "checkin_partition": ENROLLED_PARTITION,
            "last_checkin_at": at,
            "checked_in": False,
            "compliance_state": ComplianceState.UNKNOWN.value,
        }
        if retired:
            attributes["retired_keys"] = set(retired)  # a string set (SS)
        item = to_item(attributes)
        if old is None:
            condition = "attribute_not_exists(mdm_device_id)"
            values: dict[str, Any] | None = None
        else:
            condition = "enrollment_changed_at = :old"
            values = expression_values({":old": format_instant(old.enrollment_changed_at)})
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": condition,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        with translated(STORE):
            self._client.put_item(**kwargs)

    def _write_links(self, event: EnrollmentEvent, old: DeviceRecord | None) -> None:
        new_keys = [entry_key(event.user, d) for d in event.eas_device_ids]
        for key in new_keys:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item=to_item(
                        {
                            "mdm_device_id": _link_key(key),
                            "kind": "email_link",
                            "email_device_key": key,
                            "owner": event.mdm_device_id,
                        }
                    ),
                )
        # Links of ids this device no longer reports stay: they still say which device
        # last owned the email device, so an override or re-evaluation finds it and
        # the entry is blocked as retired (until another device claims the id).

    def apply_checkin(self, event: CheckinEvent) -> bool:
        at = format_instant(event.occurred_at)
        values: dict[str, Any] = {
            ":at": at,
            ":enrolled": EnrollmentState.ENROLLED.value,
            ":true": True,
            ":compromised": event.compromised,
            ":encrypted": event.encrypted,
            ":passcode": event.passcode,
            ":device": "device",
        }
        sets = [
            "last_checkin_at = :at",
            "checked_in = :true",
            "compromised = :compromised",
            "encrypted = :encrypted",
            "passcode = :passcode",
        ]
        if event.os_version:
            values[":os"] = event.os_version
            sets.append("os_version = :os")
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key={"mdm_device_id": s(event.mdm_device_id)},
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression="kind = :device AND enrollment_state = :enrolled "
                    "AND last_checkin_at <= :at",
                    ExpressionAttributeValues=expression_values(values),
                )
        except ConditionFailed:
            if self.get(event.mdm_device_id) is None:
                raise NotFound(f"MDM device {event.mdm_device_id} is not enrolled") from None
            return False  # older than the last check-in, or the device is unenrolled
        return True

    def apply_unenrollment(self, event: UnenrollmentEvent) -> bool:
        at = format_instant(event.occurred_at)
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key={"mdm_device_id": s(event.mdm_device_id)},
                    UpdateExpression="SET enrollment_state = :unenrolled, unenrolled_at = :at, "
                    "enrollment_changed_at = :at REMOVE checkin_partition",
                    ConditionExpression="kind = :device AND enrollment_changed_at <= :at",
                    ExpressionAttributeValues=expression_values(
                        {
                            ":unenrolled": EnrollmentState.UNENROLLED.value,
                            ":at": at,
                            ":device": "device",
                        }
                    ),
                )
        except ConditionFailed:
            if self.get(event.mdm_device_id) is None:
                raise NotFound(f"MDM device {event.mdm_device_id} is not enrolled") from None
            return False
        return True

    # --- the compliance reader's writes --------------------------------------------

    def set_compliance(
        self, mdm_device_id: str, result: ComplianceResult, evaluated_at: datetime
    ) -> None:
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key={"mdm_device_id": s(mdm_device_id)},
                    UpdateExpression="SET compliance_state = :state, "
                    "compliance_reasons = :reasons, evaluated_at = :at",
                    ConditionExpression="kind = :device",
                    ExpressionAttributeValues=expression_values(
                        {
                            ":state": result.state.value,
                            ":reasons": [r.value for r in result.reasons],
                            ":at": format_instant(evaluated_at),
                            ":device": "device",
                        }
                    ),
                )
        except ConditionFailed:
            raise NotFound(f"MDM device {mdm_device_id} not found") from None

    def forget_retired(self, mdm_device_id: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key={"mdm_device_id": s(mdm_device_id)},
                    UpdateExpression="DELETE retired_keys :keys",
                    ConditionExpression="kind = :device",
                    ExpressionAttributeValues=expression_values(
                        {":keys": set(keys), ":device": "device"}  # a string set (SS)
                    ),
                )
        except ConditionFailed:
            return  # the device is gone: nothing left to forget
