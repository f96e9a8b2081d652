"""The email management dashboard: the email devices gateways have seen, joined with
what the MDM knows of them and the admins' overrides.

Listing reads the whole view (one paged Query on ``by_recent``) and the MDM devices, then
filters, searches, sorts and pages in memory. That keeps every filter and every sort
column exact, with a true total, at the cost of O(devices) reads per request: fine for
the tens of thousands of devices a tenant has (a few MB read); a materialised join table
would be the next step beyond that. The cursor is keyset-based (the last row's sort
value and key), so rows arriving between pages do not shift or repeat the next page.

Summary counts partition the rows: ``unknown`` are devices the gateway decided with the
cluster's unknown-device action (rule ``unknown_device``), the rest count by access
state. ``blocked_last_hour`` counts devices whose newest request in the last hour was
refused. The series comes from per-minute counters the payload reader writes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from lambdas.domain.access import split_key
from lambdas.domain.compliance import DeviceRecord
from lambdas.domain.timefmt import format_instant
from lambdas.ports import (
    ClusterStore,
    DeviceStore,
    EmailDeviceView,
    ManualOverrideStore,
    PolicyEntryStore,
)
from lambdas.usecases.email_view import AccessObservation, email_device_key, minute_bucket
from lambdas.usecases.errors import InvalidInput, NotFound
from seg_contract import DeviceEntry, entry_key

RULE_UNKNOWN = "unknown_device"  # onprem_gateway.core.decision.RULE_UNKNOWN
ACCESS_STATES = ("allow", "block", "quarantine")
MAX_LIMIT = 500
MAX_SERIES_MINUTES = 24 * 60
_DEVICE_PAGE = 1000

SORT_COLUMNS = (
    "email_device_key",
    "user",
    "device_id",
    "device_type",
    "model",
    "os",
    "user_agent",
    "mdm_device_id",
    "enrollment_state",
    "compliance_state",
    "access_state",
    "reason",
    "rule",
    "last_seen",
    "last_command",
    "last_node",
    "cluster_id",
    "override",
    "pending",
)


@dataclass(frozen=True)
class EmailDeviceRow:
    email_device_key: str
    user: str
    device_id: str
    device_type: str
    model: str
    os: str
    user_agent: str
    mdm_device_id: str
    enrollment_state: str
    compliance_state: str
    access_state: str
    reason: str
    rule: str
    last_seen: str
    last_command: str
    last_node: str
    cluster_id: str
    override: Literal["allow", "block"] | None = None
    pending: bool = False


@dataclass(frozen=True)
class ListQuery:
    access_state: str | None = None
    compliance_state: str | None = None
    q: str | None = None
    sort: str = "last_seen"
    order: Literal["asc", "desc"] = "desc"
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[EmailDeviceRow]
    next_cursor: str | None
    total: int


@dataclass(frozen=True)
class EntryInCluster:
    cluster_id: str
    entry: DeviceEntry


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    blocked_last_hour: int
    series: list[tuple[str, int, int]]  # (minute start iso, requests, blocks)


def _os(device: DeviceRecord) -> str:
    return " ".join(part for part in (device.platform, device.os_version) if part)


def _row(obs: AccessObservation | None, key: str, device: DeviceRecord | None) -> EmailDeviceRow:
    user, device_id = split_key(key)
    return EmailDeviceRow(
        email_device_key=key,
        user=obs.user if obs else user,
        device_id=obs.device_id if obs else device_id,
        device_type=obs.device_type if obs else "",
        model=device.model if device else "",
        os=_os(device) if device else "",
        user_agent=obs.user_agent if obs else "",
        mdm_device_id=device.mdm_device_id if device else "",
        enrollment_state=device.enrollment_state.value if device else "unknown",
        compliance_state=device.compliance_state.value if device else "unknown",
        access_state=obs.access_state if obs else "",
        reason=obs.reason if obs else "",
        rule=obs.rule if obs else "",
        last_seen=obs.last_seen if obs else "",
        last_command=obs.last_command if obs else "",
        last_node=obs.last_node if obs else "",
        cluster_id=obs.cluster_id if obs else "",
    )


def devices_by_email_key(devices: DeviceStore) -> dict[str, DeviceRecord]:
    """Every MDM device, under each email device key it owns."""
    found: dict[str, DeviceRecord] = {}
    cursor: str | None = None
    while True:
        page, cursor = devices.list_devices(_DEVICE_PAGE, cursor)
        for device in page:
            for eas_id in device.eas_device_ids:
                found[entry_key(device.user, eas_id)] = device
        if cursor is None:
            return found


def _with_override(row: EmailDeviceRow, overrides: ManualOverrideStore) -> EmailDeviceRow:
    override = overrides.get(row.user, row.device_id)
    if override is None or not override.effective:
        return row
    action: Literal["allow", "block"] = "allow" if override.action.value == "allow" else "block"
    # Pending: the gateway's newest decision does not reflect the override yet.
    pending = row.access_state != "" and (row.access_state == "allow") != (action == "allow")
    return replace(row, override=action, pending=pending)


def _sort_value(row: EmailDeviceRow, column: str) -> str:
    value = getattr(row, column)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value).casefold()


def encode_cursor(value: str, key: str, query: ListQuery) -> str:
    raw = json.dumps([value, key, query.sort, query.order], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, query: ListQuery) -> tuple[str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, key, sort, order = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidInput("cursor is not one this API issued") from exc
    if (sort, order) != (query.sort, query.order) or not all(
        isinstance(v, str) for v in (value, key)
    ):
        raise InvalidInput("cursor belongs to another sort order; start from the first page")
    return value, key


def validate(query: ListQuery) -> None:
    if query.sort not in SORT_COLUMNS:
        raise InvalidInput(f"sort must be one of: {', '.join(SORT_COLUMNS)}")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")


def list_email_devices(
    query: ListQuery,
    *,
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
) -> Page:
    validate(query)
    by_key = devices_by_email_key(devices)
    rows = [
        _row(obs, obs.email_device_key, by_key.get(obs.email_device_key)) for obs in view.all_rows()
    ]
    if query.access_state:
        rows = [r for r in rows if r.access_state == query.access_state]
    if query.compliance_state:
        rows = [r for r in rows if r.compliance_state == query.compliance_state]
    if query.q:
        needle = query.q.casefold()
        rows = [r for r in rows if needle in r.user.casefold() or needle in r.device_id.casefold()]
    needs_overrides = query.sort in {"override", "pending"}
    if needs_overrides:
        rows = [_with_override(r, overrides) for r in rows]
    descending = query.order == "desc"
    rows.sort(key=lambda r: (_sort_value(r, query.sort), r.email_device_key), reverse=descending)
    total = len(rows)
    if query.cursor:
        after = decode_cursor(query.cursor, query)
        rows = [
            r
            for r in rows
            if (
                ((_sort_value(r, query.sort), r.email_device_key) < after)
                if descending
                else ((_sort_value(r, query.sort), r.email_device_key) > after)
            )
        ]
    page = rows[: query.limit]
    if not needs_overrides:
        page = [_with_override(r, overrides) for r in page]
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        next_cursor = encode_cursor(_sort_value(last, query.sort), last.email_device_key, query)
    return Page(items=page, next_cursor=next_cursor, total=total)


def email_device_detail(
    user: str,
    device_id: str,
    *,
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
) -> tuple[EmailDeviceRow, list[EntryInCluster]]:
    """The device's row and, per cluster, the entry its gateways enforce. ``NotFound``
    when neither a gateway nor the MDM nor any cluster knows the device."""
    key = email_device_key(user, device_id)
    norm_user, norm_device = split_key(key)
    if not norm_user or not norm_device:
        raise InvalidInput("user and device id must not be empty")
    obs = view.get(key)
    mdm_id = devices.find_by_email_device(norm_user, norm_device)
    device = devices.get(mdm_id) if mdm_id else None
    found = []
    for cluster in clusters.list_clusters():
        entry = entries.get_device_entry(cluster.cluster_id, norm_user, norm_device)
        if entry is not None:
            found.append(EntryInCluster(cluster.cluster_id, entry))
    if obs is None and device is None and not found:
        raise NotFound(f"email device {norm_user}/{norm_device} not found")
    return _with_override(_row(obs, key, device), overrides), found


def summary(*, view: EmailDeviceView, now: datetime, minutes: int = 60) -> Summary:
    if not 1 <= minutes <= MAX_SERIES_MINUTES:
        raise InvalidInput(f"minutes must be between 1 and {MAX_SERIES_MINUTES}")
    rows = view.all_rows()
    counts = {state: 0 for state in (*ACCESS_STATES, "unknown")}
    hour_ago = format_instant(now - timedelta(hours=1))
    blocked = 0
    for row in rows:
        unknown = row.rule == RULE_UNKNOWN or row.access_state not in ACCESS_STATES
        bucket = "unknown" if unknown else row.access_state
        counts[bucket] += 1
        if row.access_state != "allow" and row.last_seen >= hour_ago:
            blocked += 1
    wanted = [minute_bucket(now - timedelta(minutes=m)) for m in range(minutes - 1, -1, -1)]
    found = view.activity(wanted)
    series = [(f"{m}:00Z", *found.get(m, (0, 0))) for m in wanted]
    return Summary(counts=counts, blocked_last_hour=blocked, series=series)


def as_dict(row: EmailDeviceRow) -> dict[str, Any]:
    return dict(row.__dict__)
