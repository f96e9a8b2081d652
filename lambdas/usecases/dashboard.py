"""The email management dashboard: the email devices gateways have seen, joined with
what the MDM knows of them and the admins' overrides.

What each request costs (the dashboard polls every few seconds, so the common requests
must not grow with the number of devices):

- The default view (newest first, or oldest first) and the access-state filter are index
  queries (``by_recent``, ``by_state``) with DynamoDB's own paging: O(page). The page is
  joined with its MDM records and overrides in two batch reads (``EmailDeviceView.join``),
  never with every device. ``total`` comes from per-tally counters the payload reader
  keeps exact (one read).
- Search (``q``), the compliance-state filter and sorts by any other column need the
  rows themselves: they consider the ``WINDOW_CAP`` (20,000) most recently seen devices
  (of the access state filtered on), read with only the key, last_seen and the sort
  column, filter and sort those, and fetch whole rows for the returned page only.
  The compliance state lives on the MDM record, not on the view, so the compliance
  filter and sorts by MDM or override columns join what they consider (two batch reads
  per 100 rows): they consider the ``JOIN_CAP`` (2,000) most recently seen devices that
  match the search. ``total`` counts matches within what was considered: exact up to
  those caps, a lower bound beyond them. (A denormalised compliance state on the view
  would need the compliance reader to write this table; the per-page join keeps the
  MDM facts exact instead.)

The cursor is keyset-based (the last row's sort value and key), so rows arriving between
pages do not shift or repeat the next page; on the indexed path it is exactly
DynamoDB's ExclusiveStartKey.

Summary counts partition the rows: ``unknown`` are devices the gateway decided with the
cluster's unknown-device action (rule ``unknown_device``), the rest count by access
state; they come from the same counters. ``blocked_last_hour`` counts devices whose
newest request in the last hour was refused (``Select=COUNT`` queries of ``by_state``
for the last hour: O(devices refused in that hour)). The series comes from per-minute
counters the payload reader writes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lambdas.domain.access import ManualOverride, owned_keys, split_key
from lambdas.domain.compliance import DeviceRecord
from lambdas.domain.timefmt import format_instant
from lambdas.ports import (
    ClusterStore,
    DeviceStore,
    EmailDeviceView,
    ManualOverrideStore,
    MdmFacts,
    PolicyEntryStore,
    ViewJoin,
)
from lambdas.usecases.email_view import (
    AccessObservation,
    email_device_key,
    minute_bucket,
    tally_state,
)
from lambdas.usecases.errors import InvalidInput, NotFound
from seg_contract import DeviceEntry

ACCESS_STATES = ("allow", "block", "quarantine")
MAX_LIMIT = 500
MAX_SERIES_MINUTES = 24 * 60
# Search and sorts by other columns look at this many most recently seen devices (read
# with only the key, last_seen and the sort column) ...
WINDOW_CAP = 20_000
# ... and the compliance filter and sorts by MDM or override columns, which need a join
# (two batch reads per 100 rows), at this many of those that match the search.
JOIN_CAP = 2_000

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


class EmailDevice(BaseModel):
    """One row of the dashboard: what the gateways saw, joined with the MDM record and
    the manual override. It is also the API's response model (one definition)."""

    model_config = ConfigDict(frozen=True)

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
    override: Literal["allow", "block"] | None
    pending: bool


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
    items: list[EmailDevice]
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


def mdm_facts(device: DeviceRecord) -> MdmFacts:
    return MdmFacts(
        mdm_device_id=device.mdm_device_id,
        model=device.model,
        platform=device.platform,
        os_version=device.os_version,
        enrollment_state=device.enrollment_state.value,
        compliance_state=device.compliance_state.value,
    )


def _os(device: MdmFacts) -> str:
    return " ".join(part for part in (device.platform, device.os_version) if part)


def _row(obs: AccessObservation | None, key: str, device: MdmFacts | None) -> EmailDevice:
    user, device_id = split_key(key)
    return EmailDevice(
        email_device_key=key,
        user=obs.user if obs else user,
        device_id=obs.device_id if obs else device_id,
        device_type=obs.device_type if obs else "",
        model=device.model if device else "",
        os=_os(device) if device else "",
        user_agent=obs.user_agent if obs else "",
        mdm_device_id=device.mdm_device_id if device else "",
        enrollment_state=device.enrollment_state if device else "unknown",
        compliance_state=device.compliance_state if device else "unknown",
        access_state=obs.access_state if obs else "",
        reason=obs.reason if obs else "",
        rule=obs.rule if obs else "",
        last_seen=obs.last_seen if obs else "",
        last_command=obs.last_command if obs else "",
        last_node=obs.last_node if obs else "",
        cluster_id=obs.cluster_id if obs else "",
        override=None,
        pending=False,
    )


# Columns the view rows hold (a window read can project them); the rest come from the
# MDM record (``_MDM_COLUMNS``) or the override (``override``, ``pending``).
_VIEW_COLUMNS = frozenset(
    {
        "user",
        "device_id",
        "device_type",
        "user_agent",
        "access_state",
        "reason",
        "rule",
        "last_seen",
        "last_command",
        "last_node",
        "cluster_id",
    }
)
_MDM_COLUMNS = frozenset({"model", "os", "mdm_device_id", "enrollment_state", "compliance_state"})


def _with_override(row: EmailDevice, override: ManualOverride | None) -> EmailDevice:
    if override is None or not override.effective:
        return row
    action: Literal["allow", "block"] = "allow" if override.action.value == "allow" else "block"
    # Pending: the gateway's newest decision does not reflect the override yet.
    pending = row.access_state != "" and (row.access_state == "allow") != (action == "allow")
    return row.model_copy(update={"override": action, "pending": pending})


def _join(
    observations: list[AccessObservation],
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
) -> list[EmailDevice]:
    """Rows with their MDM facts and overrides: a few batch reads for the whole list
    (or, for a view that cannot join, one lookup per row)."""
    keys = [o.email_device_key for o in observations]
    joined = view.join(keys) if keys else ViewJoin({}, {})
    if joined is None:
        joined = _join_one_by_one(keys, devices, overrides)
    return [
        _with_override(
            _row(o, o.email_device_key, joined.devices.get(o.email_device_key)),
            joined.overrides.get(o.email_device_key),
        )
        for o in observations
    ]


def _join_one_by_one(
    keys: list[str], devices: DeviceStore, overrides: ManualOverrideStore
) -> ViewJoin:
    found = ViewJoin({}, {})
    for key in keys:
        user, device_id = split_key(key)
        mdm_id = devices.find_by_email_device(user, device_id)
        device = devices.get(mdm_id) if mdm_id else None
        if device is not None and key in owned_keys(device):
            found.devices[key] = mdm_facts(device)
        override = overrides.get(user, device_id)
        if override is not None:
            found.overrides[key] = override
    return found


def _sort_value(row: EmailDevice, column: str) -> str:
    value = getattr(row, column)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if column == "last_seen":
        return str(value)  # the index's order (case matters to it)
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


def total_of(tallies: dict[str, int], access_state: str | None) -> int:
    """Rows of one access state (or all rows), from the per-tally counters."""
    return sum(
        count
        for name, count in tallies.items()
        if access_state is None or tally_state(name)[0] == access_state
    )


def summary_counts(tallies: dict[str, int]) -> dict[str, int]:
    """The summary's partition: unknown-device decisions apart, the rest by state."""
    counts = {state: 0 for state in (*ACCESS_STATES, "unknown")}
    for name, count in tallies.items():
        state, unknown = tally_state(name)
        counts["unknown" if unknown or state not in ACCESS_STATES else state] += count
    return counts


def list_email_devices(
    query: ListQuery,
    *,
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
) -> Page:
    validate(query)
    after = decode_cursor(query.cursor, query) if query.cursor else None
    if query.sort == "last_seen" and not query.q and not query.compliance_state:
        return _indexed_page(query, after, view, devices, overrides)
    return _window_page(query, after, view, devices, overrides)


def _indexed_page(
    query: ListQuery,
    after: tuple[str, str] | None,
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
) -> Page:
    """Newest (or oldest) first, all rows or one access state: one index query."""
    if after is not None and not all(after):
        # The index's position needs a real last_seen and key (DynamoDB refuses empty
        # key values); every cursor this path issues has both.
        raise InvalidInput("cursor is not one this API issued")
    found, more = view.recent_page(
        query.access_state, ascending=query.order == "asc", limit=query.limit, after=after
    )
    items = _join(found, view, devices, overrides)
    next_cursor = None
    if more and found:
        last = found[-1]
        next_cursor = encode_cursor(last.last_seen, last.email_device_key, query)
    return Page(
        items=items, next_cursor=next_cursor, total=total_of(view.tallies(), query.access_state)
    )


def _window_page(
    query: ListQuery,
    after: tuple[str, str] | None,
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
) -> Page:
    """Search, compliance filter, other sorts: within the ``WINDOW_CAP`` newest rows."""
    columns = {query.sort} & _VIEW_COLUMNS
    if query.sort == "pending":
        columns.add("access_state")  # pending compares it with the override
    window, _ = view.window(query.access_state, WINDOW_CAP, columns)
    if query.q:
        needle = query.q.casefold()
        window = [
            o
            for o in window
            if any(needle in part.casefold() for part in split_key(o.email_device_key))
        ]
    needs_join = bool(query.compliance_state) or query.sort in (
        _MDM_COLUMNS | {"override", "pending"}
    )
    if needs_join:
        rows = _join(window[:JOIN_CAP], view, devices, overrides)
    else:
        rows = [_row(o, o.email_device_key, None) for o in window]
    if query.compliance_state:
        rows = [r for r in rows if r.compliance_state == query.compliance_state]
    descending = query.order == "desc"
    rows.sort(key=lambda r: (_sort_value(r, query.sort), r.email_device_key), reverse=descending)
    total = len(rows)
    if after is not None:
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
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        next_cursor = encode_cursor(_sort_value(last, query.sort), last.email_device_key, query)
    # Whole rows (and their MDM facts and overrides) for the page only.
    full = view.get_many([r.email_device_key for r in page])
    items = _join(
        [full[r.email_device_key] for r in page if r.email_device_key in full],
        view,
        devices,
        overrides,
    )
    return Page(items=items, next_cursor=next_cursor, total=total)


def email_device_detail(
    user: str,
    device_id: str,
    *,
    view: EmailDeviceView,
    devices: DeviceStore,
    overrides: ManualOverrideStore,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
) -> tuple[EmailDevice, list[EntryInCluster]]:
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
    override = overrides.get(norm_user, norm_device)
    facts = mdm_facts(device) if device else None
    return _with_override(_row(obs, key, facts), override), found


def summary(*, view: EmailDeviceView, now: datetime, minutes: int = 60) -> Summary:
    if not 1 <= minutes <= MAX_SERIES_MINUTES:
        raise InvalidInput(f"minutes must be between 1 and {MAX_SERIES_MINUTES}")
    counts = summary_counts(view.tallies())
    hour_ago = format_instant(now - timedelta(hours=1))
    blocked = sum(view.count_since(state, hour_ago) for state in ACCESS_STATES if state != "allow")
    wanted = [minute_bucket(now - timedelta(minutes=m)) for m in range(minutes - 1, -1, -1)]
    found = view.activity(wanted)
    series = [(f"{m}:00Z", *found.get(m, (0, 0))) for m in wanted]
    return Summary(counts=counts, blocked_last_hour=blocked, series=series)


def as_dict(row: EmailDevice) -> dict[str, Any]:
    return row.model_dump()
