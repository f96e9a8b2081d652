"""Console routes for email devices (``/console/v1/email-devices``): the list (search,
filters, sort, paging, exact totals over every device), its CSV export, the summary,
one device's page, and the operators' actions on it (block / allow / clear, notes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from lambdas.api import models
from lambdas.api.auth import OperatorAudit, Viewer
from lambdas.api.deps import (
    Clusters,
    Connections,
    DeviceEvents,
    Devices,
    Entries,
    History,
    Nodes,
    Notes,
    Notices,
    Now,
    Overrides,
    Queue,
    Roster,
    View,
)
from lambdas.api.params import DeviceIdPath, UserPath
from lambdas.domain.email_view import email_device_key
from lambdas.domain.errors import InvalidInput
from lambdas.domain.timefmt import format_instant, format_optional_instant
from lambdas.ports import DeviceNote
from lambdas.usecases import dashboard, device_page
from lambdas.usecases.manual_overrides import request_override

router = APIRouter(prefix="/console/v1", tags=["console"])

AccessFilter = Annotated[
    Literal["allow", "block", "quarantine", "unknown"] | None,
    Query(description="access state; unknown: decided by the unknown-device action"),
]
ComplianceFilter = Annotated[Literal["compliant", "non_compliant", "unknown"] | None, Query()]
ClusterFilter = Annotated[str | None, Query(max_length=64)]
NodeFilter = Annotated[str | None, Query(max_length=128)]
NotSeenDays = Annotated[
    int | None,
    Query(ge=0, le=dashboard.MAX_NOT_SEEN_DAYS, description="last seen more than N days ago"),
]
Search = Annotated[
    str | None,
    Query(max_length=256, description="substring of user, device id, type, model or MDM id"),
]
Sort = Annotated[Literal[dashboard.SORT_COLUMNS], Query()]  # type: ignore[valid-type]
Order = Annotated[Literal["asc", "desc"], Query()]
Cursor = Annotated[str | None, Query(max_length=2048)]


@dataclass(frozen=True)
class ViewFilters:
    """The list's filters, search and sort, as both the list and its export take them."""

    access_state: str | None
    compliance_state: str | None
    cluster_id: str | None
    node: str | None
    not_seen_days: int | None
    q: str | None
    sort: str
    order: Literal["asc", "desc"]

    def query(self, limit: int, cursor: str | None) -> dashboard.ListQuery:
        return dashboard.ListQuery(
            access_state=self.access_state,
            compliance_state=self.compliance_state,
            q=self.q,
            sort=self.sort,
            order=self.order,
            limit=limit,
            cursor=cursor,
            cluster_id=self.cluster_id,
            node=self.node,
            not_seen_days=self.not_seen_days,
        )


def view_filters(
    *,
    access_state: AccessFilter = None,
    compliance_state: ComplianceFilter = None,
    cluster_id: ClusterFilter = None,
    node: NodeFilter = None,
    not_seen_days: NotSeenDays = None,
    q: Search = None,
    sort: Sort = "last_seen",
    order: Order = "desc",
) -> ViewFilters:
    return ViewFilters(
        access_state, compliance_state, cluster_id, node, not_seen_days, q, sort, order
    )


Filters = Annotated[ViewFilters, Depends(view_filters)]


@router.get("/email-devices", response_model=models.EmailDevicePage)
def list_email_devices(
    *,
    _user: Viewer,
    roster: Roster,
    now: Now,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=dashboard.MAX_LIMIT)] = 50,
    cursor: Cursor = None,
) -> models.EmailDevicePage:
    query = filters.query(limit, cursor)
    page = dashboard.list_email_devices(query, roster=roster, now=now)
    return models.EmailDevicePage(items=page.items, next_cursor=page.next_cursor, total=page.total)


@router.get(
    "/email-devices/export",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="The current view as CSV, in parts (X-Next-Cursor names the next part)",
)
def export_email_devices(
    *,
    _user: Viewer,
    roster: Roster,
    now: Now,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=dashboard.MAX_EXPORT_ROWS)] = dashboard.MAX_EXPORT_ROWS,
    cursor: Cursor = None,
) -> Response:
    text, next_cursor, total = dashboard.export_csv(
        filters.query(limit, cursor), roster=roster, now=now
    )
    headers = {
        "Content-Disposition": 'attachment; filename="email-devices.csv"',
        "X-Total-Count": str(total),
        "Cache-Control": "no-store",
    }
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    return Response(content=text, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/email-devices/summary", response_model=models.Summary)
def email_device_summary(
    *,
    _user: Viewer,
    roster: Roster,
    view: View,
    now: Now,
    minutes: Annotated[int, Query(ge=1, le=dashboard.MAX_SERIES_MINUTES)] = 60,
) -> models.Summary:
    found = dashboard.summary(roster=roster, view=view, now=now, minutes=minutes)
    return models.Summary(
        counts=found.counts,
        blocked_last_hour=found.blocked_last_hour,
        series=[models.SeriesPoint(t=t, requests=r, blocks=b) for t, r, b in found.series],
        clusters=found.clusters,
        nodes=found.nodes,
    )


# ``:path``: a DeviceId is client-chosen and may contain "/" (sent as %2F, which the
# router sees decoded).
@router.get("/email-devices/{user}/{device_id:path}", response_model=models.EmailDeviceDetail)
def email_device_detail(
    *,
    user: UserPath,
    device_id: DeviceIdPath,
    _user: Viewer,
    view: View,
    devices: Devices,
    overrides: Overrides,
    clusters: Clusters,
    entries: Entries,
    nodes: Nodes,
    connections: Connections,
    history: History,
    device_events: DeviceEvents,
    notes: Notes,
    notices: Notices,
) -> models.EmailDeviceDetail:
    stores = device_page.DevicePageStores(
        view=view,
        devices=devices,
        overrides=overrides,
        clusters=clusters,
        entries=entries,
        nodes=nodes,
        connections=connections,
        history=history,
        device_events=device_events,
        notes=notes,
        notices=notices,
    )
    page = device_page.device_page(user, device_id, stores)
    device = page.device
    override = page.override
    return models.EmailDeviceDetail(
        **dashboard.as_dict(page.row),
        entries=[
            models.PolicyEntryView(
                cluster_id=e.cluster_id,
                access=e.entry.access,
                reason=e.entry.reason,
                source=e.entry.source.value,
                version=e.entry.version,
                updated_at=format_instant(e.entry.updated_at),
            )
            for e in page.entries
        ],
        observations=page.observations,
        nodes=[
            models.NodeHolding(
                cluster_id=n.cluster_id,
                node_id=n.node_id,
                connected=n.connected,
                policy_version=n.policy_version,
                last_seen=n.last_seen or None,
                holds=n.holds,
            )
            for n in page.nodes
        ],
        history=[
            models.ClusterHistory(
                cluster_id=cluster_id,
                events=events,
            )
            for cluster_id, events in page.history.items()
        ],
        mdm=models.MdmSummary(
            mdm_device_id=device.mdm_device_id,
            compliance_state=device.compliance_state.value,
            compliance_reasons=list(device.compliance_reasons),
            evaluated_at=format_optional_instant(device.evaluated_at),
            enrollment_state=device.enrollment_state.value,
            last_checkin_at=format_optional_instant(device.last_checkin_at),
        )
        if device
        else None,
        compliance_history=[
            models.ComplianceRecord(
                received_at=c.received_at,
                occurred_at=c.occurred_at,
                kind=c.kind,
                summary=c.summary,
            )
            for c in page.compliance_history
        ],
        override_info=models.OverrideInfo(
            action="allow" if override.action.value == "allow" else "block",
            reason=override.reason,
            actor=override.actor,
            updated_at=format_instant(override.updated_at),
        )
        if override is not None and override.effective
        else None,
        note=models.Note(
            text=page.note.text, author=page.note.author, updated_at=page.note.updated_at
        )
        if page.note
        else None,
        notice=models.NoticeStatus(
            state=page.notice.state,
            observed_at=page.notice.observed_at,
            outcome=page.notice.outcome,
            outcome_at=page.notice.outcome_at,
        )
        if page.notice
        else None,
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
    audit: OperatorAudit,
    queue: Queue,
    overrides: Overrides,
) -> models.Queued:
    key = email_device_key(user, device_id)
    norm_user, _, norm_device = key.partition("\x1f")
    held = overrides.get(norm_user, norm_device) if norm_user and norm_device else None
    message = request_override(
        user,
        device_id,
        body.action,
        reason=body.reason,
        actor=audit.actor,
        queue=queue,
        now=audit.now,
    )
    audit.record(
        f"device.{body.action}",
        f"{message.user}/{message.device_id}",
        before={"override": held.action.value if held is not None and held.effective else None},
        after={"override": None if body.action == "clear" else body.action},
        reason=body.reason,
    )
    return models.Queued()


@router.put(
    "/email-devices/{user}/{device_id:path}/note",
    response_model=models.Note | None,
    summary="Set the operators' note on an email device (an empty text removes it)",
)
def put_note(
    *,
    user: UserPath,
    device_id: DeviceIdPath,
    body: models.NoteUpdate,
    audit: OperatorAudit,
    notes: Notes,
) -> models.Note | None:
    key = email_device_key(user, device_id)
    norm_user, _, norm_device = key.partition("\x1f")
    if not norm_user or not norm_device:
        raise InvalidInput("user and device id must not be empty")
    text = device_page.note_text(body.text)
    held = notes.get(key)
    note = DeviceNote(key, text, audit.actor, format_instant(audit.now))
    notes.put(note)
    audit.record(
        "device.note",
        f"{norm_user}/{norm_device}",
        before={"note": held.text if held else None},
        after={"note": text or None},
    )
    if not text:
        return None
    return models.Note(text=note.text, author=note.author, updated_at=note.updated_at)
