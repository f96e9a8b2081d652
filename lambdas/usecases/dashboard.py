"""The email management dashboard: every email-device row of the tenant, searched,
filtered, sorted and paged over the in-memory roster (``roster_index``), with exact
totals; the summary; and the CSV export of the current view.

What a request costs: bringing the warm function's roster up to date (the journal since
the previous request, ``roster.RosterCache``) and a few passes over its columns. Nothing
grows with the number of devices in DynamoDB; the passes grow with it in memory (about a
tenth of a second at 250,000 devices: ``bench/dashboard_query.py``).

Rows are one cluster's observation of an email device (a device two clusters saw has two
rows, each with its cluster), joined with the MDM record's facts and the admins'
override of the email device.

The cursor is keyset-based (the last row's sort value and row key), so rows arriving
between pages do not shift or repeat the next page.

Summary counts partition the rows: ``unknown`` are devices the gateway decided with the
cluster's unknown-device action (rule ``unknown_device``), the rest count by access
state. ``blocked_last_hour`` counts rows whose newest request in the last hour was
refused. The series comes from per-minute counters the payload reader writes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from lambdas.domain.cursors import NOT_ISSUED, decode_cursor, encode_cursor
from lambdas.domain.email_view import minute_bucket
from lambdas.domain.errors import InvalidInput
from lambdas.ports import EmailDeviceView
from lambdas.usecases.audit import safe_cell
from lambdas.usecases.roster import RosterCache
from lambdas.usecases.roster_index import SORT_COLUMNS, RosterIndex, RosterQuery

ACCESS_STATES = ("allow", "block", "quarantine")
ACCESS_FILTERS = (*ACCESS_STATES, "unknown")
COMPLIANCE_STATES = ("compliant", "non_compliant", "unknown")
MAX_LIMIT = 500
MAX_EXPORT_ROWS = 10_000  # per export request: ~2.5 MB (Lambda answers at most 6 MB)
MAX_SERIES_MINUTES = 24 * 60
MAX_NOT_SEEN_DAYS = 3650
__all__ = ["SORT_COLUMNS", "EmailDevice", "ListQuery", "Page", "Summary"]


class EmailDevice(BaseModel):
    """One row of the dashboard: one cluster's observation of an email device, joined
    with the MDM record and the manual override. It is also the API's response model
    (one definition)."""

    model_config = ConfigDict(frozen=True)

    row_key: str
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
    cluster_id: str | None = None
    node: str | None = None
    not_seen_days: int | None = None


@dataclass(frozen=True)
class Page:
    items: list[EmailDevice]
    next_cursor: str | None
    total: int


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    blocked_last_hour: int
    series: list[tuple[str, int, int]]  # (minute start iso, requests, blocks)
    clusters: list[str]
    nodes: list[str]


def row_of(index: RosterIndex, slot: int) -> EmailDevice:
    values = index.row(slot)
    override = values["override"]
    return EmailDevice(
        row_key=values["row_key"],
        email_device_key=values["email_device_key"],
        user=values["user"],
        device_id=values["device_id"],
        device_type=values["device_type"],
        model=values["model"],
        os=values["os"],
        user_agent=values["user_agent"],
        mdm_device_id=values["mdm_device_id"],
        enrollment_state=values["enrollment_state"] or "unknown",
        compliance_state=values["compliance_state"] or "unknown",
        access_state=values["access_state"],
        reason=values["reason"],
        rule=values["rule"],
        last_seen=values["last_seen"],
        last_command=values["last_command"],
        last_node=values["last_node"],
        cluster_id=values["cluster_id"],
        override="allow" if override == "allow" else "block" if override == "block" else None,
        pending=values["pending"] == "1",
    )


def _position(cursor: str, query: ListQuery) -> tuple[str, str]:
    """(sort value, row key) after which a cursor's page starts; the cursor carries the
    sort order it was issued under, so one from another order is refused."""
    position = decode_cursor(cursor, list)
    if len(position) != 4:
        raise InvalidInput(NOT_ISSUED)
    value, key, sort, order = position
    if (sort, order) != (query.sort, query.order) or not all(
        isinstance(v, str) for v in (value, key)
    ):
        raise InvalidInput("cursor belongs to another sort order; start from the first page")
    return value, key


def validate(query: ListQuery, max_limit: int = MAX_LIMIT) -> None:
    if query.sort not in SORT_COLUMNS:
        raise InvalidInput(f"sort must be one of: {', '.join(SORT_COLUMNS)}")
    if not 1 <= query.limit <= max_limit:
        raise InvalidInput(f"limit must be between 1 and {max_limit}")
    if query.access_state is not None and query.access_state not in ACCESS_FILTERS:
        raise InvalidInput(f"access_state must be one of: {', '.join(ACCESS_FILTERS)}")
    if query.compliance_state is not None and query.compliance_state not in COMPLIANCE_STATES:
        raise InvalidInput(f"compliance_state must be one of: {', '.join(COMPLIANCE_STATES)}")
    if query.not_seen_days is not None and not 0 <= query.not_seen_days <= MAX_NOT_SEEN_DAYS:
        raise InvalidInput(f"not_seen_days must be between 0 and {MAX_NOT_SEEN_DAYS}")


def _roster_query(query: ListQuery) -> RosterQuery:
    return RosterQuery(
        access_state=query.access_state,
        compliance_state=query.compliance_state,
        cluster_id=query.cluster_id,
        node=query.node,
        not_seen_days=query.not_seen_days,
        q=query.q.strip() if query.q and query.q.strip() else None,
        sort=query.sort,
        descending=query.order == "desc",
        limit=query.limit,
        after=_position(query.cursor, query) if query.cursor else None,
    )


def _page(query: ListQuery, index: RosterIndex, now: datetime) -> tuple[list[int], bool, int]:
    found = index.query(_roster_query(query), now)
    return found.slots, found.more, found.total


def _list(query: ListQuery, roster: RosterCache, now: datetime, max_limit: int) -> Page:
    validate(query, max_limit)
    with roster.lock:
        index = roster.current()
        slots, more, total = _page(query, index, now)
        items = [row_of(index, slot) for slot in slots]
        next_cursor = None
        if more and slots:
            last, order = slots[-1], (query.sort, query.order)
            next_cursor = encode_cursor(
                [index.sort_value(last, query.sort), index.value(last, "row_key"), *order]
            )
    return Page(items=items, next_cursor=next_cursor, total=total)


def list_email_devices(query: ListQuery, *, roster: RosterCache, now: datetime) -> Page:
    return _list(query, roster, now, MAX_LIMIT)


# --- export --------------------------------------------------------------------------

CSV_COLUMNS = (
    "user",
    "device_id",
    "cluster_id",
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
    "override",
    "pending",
    "last_seen",
    "last_command",
    "last_node",
)


def export_csv(
    query: ListQuery, *, roster: RosterCache, now: datetime
) -> tuple[str, str | None, int]:
    """The current filtered, sorted view as CSV: up to ``query.limit`` rows (at most
    ``MAX_EXPORT_ROWS``) after the cursor, the header on the first part only; and the
    cursor of the next part. Cells that a spreadsheet would run as a formula are text."""
    validate(query, MAX_EXPORT_ROWS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if query.cursor is None:
        writer.writerow(CSV_COLUMNS)
    with roster.lock:
        index = roster.current()
        slots, more, total = _page(query, index, now)
        columns = [index.columns[c] for c in CSV_COLUMNS]
        for slot in slots:
            writer.writerow([safe_cell(column[slot]) for column in columns])
        next_cursor = None
        if more and slots:
            last, order = slots[-1], (query.sort, query.order)
            next_cursor = encode_cursor(
                [index.sort_value(last, query.sort), index.value(last, "row_key"), *order]
            )
    return out.getvalue(), next_cursor, total


# --- summary -------------------------------------------------------------------------


def summary(
    *, roster: RosterCache, view: EmailDeviceView, now: datetime, minutes: int = 60
) -> Summary:
    if not 1 <= minutes <= MAX_SERIES_MINUTES:
        raise InvalidInput(f"minutes must be between 1 and {MAX_SERIES_MINUTES}")
    with roster.lock:
        index = roster.current()
        counted = index.counts(now - timedelta(hours=1))
        clusters, nodes = index.clusters_and_nodes()
    wanted = [minute_bucket(now - timedelta(minutes=m)) for m in range(minutes - 1, -1, -1)]
    found = view.activity(wanted)
    series = [(f"{m}:00Z", *found.get(m, (0, 0))) for m in wanted]
    return Summary(
        counts=counted.counts,
        blocked_last_hour=counted.blocked_since,
        series=series,
        clusters=[c for c in clusters if c],
        nodes=[n for n in nodes if n],
    )


def device_rows(roster: RosterCache, email_device_key: str, now: datetime) -> list[EmailDevice]:
    """The roster's rows of one email device (one per cluster that saw it), newest first."""
    with roster.lock:
        index = roster.current()
        rows = [row_of(index, slot) for slot in index.slots_of_device(email_device_key)]
    return sorted(rows, key=lambda r: r.last_seen, reverse=True)


def as_dict(row: EmailDevice) -> dict[str, Any]:
    return row.model_dump()
