"""Console routes for the audit trail (``/console/v1/audit``: search, page, export as CSV
or JSON) and the notices to users (``/console/v1/notices``: the template, the
per-cluster remediation text, on or off)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from lambdas.api import models
from lambdas.api.auth import AdminAudit, Viewer
from lambdas.api.deps import Audit, AuditRetentionDays, Notices, Now
from lambdas.domain.notices import NoticeSettings
from lambdas.usecases import audit as audit_cases

router = APIRouter(prefix="/console/v1", tags=["console"])

Actor = Annotated[str | None, Query(max_length=256, description="exactly this actor")]
Action = Annotated[
    str | None,
    Query(max_length=64, description='an action ("device.block") or a prefix ("device.")'),
]
Target = Annotated[str | None, Query(max_length=256, description="substring of the target")]
Text = Annotated[str | None, Query(max_length=256, description="substring anywhere")]
Since = Annotated[datetime | None, Query(description="at or after this instant")]
Until = Annotated[datetime | None, Query(description="at or before this instant")]
Cursor = Annotated[str | None, Query(max_length=512)]


def audit_filters(
    *,
    actor: Actor = None,
    action: Action = None,
    target: Target = None,
    q: Text = None,
    since: Since = None,
    until: Until = None,
) -> audit_cases.AuditQuery:
    """What to look for (limit and cursor are each route's own)."""
    return audit_cases.AuditQuery(actor, action, target, q, since, until)


Filters = Annotated[audit_cases.AuditQuery, Depends(audit_filters)]


@router.get("/audit", response_model=models.AuditPage)
def search_audit(
    *,
    _user: Viewer,
    log: Audit,
    retention_days: AuditRetentionDays,
    now: Now,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=audit_cases.MAX_LIMIT)] = 50,
    cursor: Cursor = None,
) -> models.AuditPage:
    """Records newest first. A page may hold fewer than ``limit`` records with a
    ``next_cursor`` when the search read its share of a long, sparse history."""
    query = replace(filters, limit=limit, cursor=cursor)
    found, next_cursor = audit_cases.search(log, query, now=now, retention_days=retention_days)
    return models.AuditPage(items=found, next_cursor=next_cursor)


@router.get(
    "/audit/export",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
    summary="The matching records as CSV or JSON (X-Next-Cursor names the next part)",
)
def export_audit(
    *,
    _user: Viewer,
    log: Audit,
    retention_days: AuditRetentionDays,
    now: Now,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",
    filters: Filters,
    cursor: Cursor = None,
) -> Response:
    query = replace(filters, limit=audit_cases.MAX_EXPORT, cursor=cursor)
    found, next_cursor = audit_cases.search(
        log,
        query,
        now=now,
        retention_days=retention_days,
        max_scanned=audit_cases.MAX_EXPORT * 4,
        max_limit=audit_cases.MAX_EXPORT,
    )
    headers = {
        "Content-Disposition": f'attachment; filename="audit.{format}"',
        "Cache-Control": "no-store",
    }
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    if format == "json":
        body = json.dumps([e.as_dict() for e in found], indent=1, sort_keys=True)
        return Response(content=body, media_type="application/json", headers=headers)
    text = audit_cases.to_csv(found, header=cursor is None)
    return Response(content=text, media_type="text/csv; charset=utf-8", headers=headers)


# --- notices --------------------------------------------------------------------------


@router.get("/notices", response_model=NoticeSettings)
def get_notices(_user: Viewer, notices: Notices) -> NoticeSettings:
    return notices.settings()


@router.put("/notices", response_model=NoticeSettings)
def put_notices(*, settings: NoticeSettings, audit: AdminAudit, notices: Notices) -> NoticeSettings:
    """Replace the notice settings (template, mail domain, remediation per cluster)."""
    before = notices.settings()
    notices.put_settings(settings)
    audit.record(
        "notices.update", "notices", before=before.model_dump(), after=settings.model_dump()
    )
    return settings
