"""Console roles (each route checks one role in one place; the API refuses what the role
may not do, whatever the page shows), the audit trail (every action recorded, searched,
exported; a device password's issuance names the admin, never the password), notes, the
notices' settings, the device page and the CSV export."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from fastapi.routing import APIRoute

from lambdas.api import auth
from lambdas.api.deps import clock
from lambdas.handlers import payload_reader
from seg_contract.crypto import generate_cluster_keypair
from tests.integration.control_api.conftest import Ctx, enrollment, register, sqs_event
from tests.integration.control_api.test_api_dashboard import NOW, ev
from tests.support.events import LambdaContext

ROLE_OF = {auth.viewer: "viewer", auth.operator: "operator", auth.admin: "admin"}


def console_routes(ctx: Ctx) -> list[APIRoute]:
    """Every route of the console API (FastAPI keeps included routers as such)."""
    found: list[APIRoute] = []
    pending: list[Any] = list(ctx.client.app.routes)  # type: ignore[attr-defined]
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, APIRoute) and route.path.startswith("/console/v1"):
            found.append(route)
    return found


def role_checks(route: APIRoute) -> list[str]:
    """The role dependencies a route runs (anywhere in its dependency tree)."""
    found: list[str] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call in ROLE_OF:
            found.append(ROLE_OF[dep.call])
        stack.extend(dep.dependencies)
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path.replace("{cluster_id}", "c-x"))


def test_every_console_route_checks_exactly_one_role(ctx: Ctx) -> None:
    routes = console_routes(ctx)
    assert len(routes) > 20
    for route in routes:
        checks = role_checks(route)
        assert len(checks) == 1, (route.path, route.methods, checks)
        if route.methods & {"GET"}:
            assert checks == ["viewer"], route.path


@pytest.mark.parametrize(("caller", "allowed"), [("viewer", set()), ("operator", {"operator"})])
def test_a_role_is_refused_what_it_may_not_do_with_a_reason(
    ctx: Ctx, caller: str, allowed: set[str]
) -> None:
    headers = getattr(ctx, caller)()
    for route in console_routes(ctx):
        (needed,) = role_checks(route)
        if needed == "viewer" or needed in allowed:
            continue
        for method in route.methods:
            response = ctx.client.request(method, concrete(route.path), headers=headers, json={})
            assert response.status_code == 403, (method, route.path)
            assert f"needs the {needed} role" in response.json()["detail"]


def test_a_viewer_cannot_block_even_with_a_forged_request(ctx: Ctx) -> None:
    path = "/console/v1/email-devices/alice/DEV1/override"
    body = {"action": "block", "reason": "forged"}
    refused = ctx.client.post(path, json=body, headers=ctx.viewer())
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this needs the operator role; viewer holds viewer"
    assert ctx.aws.receive_all("compliance") == []  # nothing was queued
    assert ctx.client.post(path, json=body, headers=ctx.operator()).status_code == 202


def audit(ctx: Ctx, **query: Any) -> list[dict[str, Any]]:
    response = ctx.client.get("/console/v1/audit", params=query, headers=ctx.viewer())
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_actions_are_recorded_with_who_what_before_after_and_why(ctx: Ctx) -> None:
    private, public = generate_cluster_keypair()
    cluster_id, _ = register(ctx, public_key=public)
    ctx.client.post(
        "/console/v1/email-devices/alice/DEV1/override",
        json={"action": "block", "reason": "lost phone"},
        headers=ctx.operator(),
    ).raise_for_status()
    ctx.client.put(
        "/console/v1/email-devices/alice/DEV1/note",
        json={"text": "reported lost at the front desk"},
        headers=ctx.operator(),
    ).raise_for_status()
    ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/substitution/alice",
        json={"upstream_password": "Upstream-Secret-1"},
        headers=ctx.admin(),
    ).raise_for_status()
    issued = ctx.client.post(
        f"/console/v1/clusters/{cluster_id}/substitution/alice/device-password",
        json={"device_id": "DEV1"},
        headers={**ctx.admin(), "X-SEG-Reason": "new phone"},
    )
    assert issued.status_code == 201
    password = issued.json()["device_password"]
    ctx.client.post(
        f"/console/v1/clusters/{cluster_id}/credentials/rotate", headers=ctx.admin()
    ).raise_for_status()

    records = audit(ctx)
    assert [r["action"] for r in records] == [
        "cluster.credential.rotate",
        "substitution.device_password",
        "substitution.upstream_password",
        "device.note",
        "device.block",
        "cluster.create",
    ]
    block = next(r for r in records if r["action"] == "device.block")
    assert (block["actor"], block["role"], block["target"], block["reason"]) == (
        "operator",
        "operator",
        "alice/dev1",
        "lost phone",
    )
    assert (block["before"], block["after"]) == ({"override": None}, {"override": "block"})
    pw1 = next(r for r in records if r["action"] == "substitution.device_password")
    assert (pw1["actor"], pw1["target"], pw1["reason"]) == (
        "admin",
        f"{cluster_id}/alice",
        "new phone",
    )
    assert pw1["after"] == {"device_password": True, "device_id": "dev1"}  # the device too
    everything = json.dumps(records)
    assert password not in everything and "Upstream-Secret-1" not in everything
    assert private not in everything
    # Search and filters.
    assert [r["action"] for r in audit(ctx, action="device.")] == ["device.note", "device.block"]
    assert [r["action"] for r in audit(ctx, actor="admin", q="alice")] == [
        "substitution.device_password",
        "substitution.upstream_password",
    ]
    assert audit(ctx, target="nobody") == []
    bad = ctx.client.get("/console/v1/audit", params={"limit": 0}, headers=ctx.viewer())
    assert bad.status_code == 422


def test_the_audit_trail_exports_as_csv_and_json(ctx: Ctx) -> None:
    register(ctx, "one")
    register(ctx, "two")
    exported = ctx.client.get(
        "/console/v1/audit/export", params={"format": "csv"}, headers=ctx.viewer()
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["action"] for r in rows] == ["cluster.create", "cluster.create"]
    as_json = ctx.client.get(
        "/console/v1/audit/export", params={"format": "json"}, headers=ctx.viewer()
    ).json()
    assert [r["after"]["name"] for r in as_json] == ["two", "one"]


def test_notice_settings_are_admin_only_validated_and_audited(ctx: Ctx) -> None:
    settings = ctx.client.get("/console/v1/notices", headers=ctx.viewer()).json()
    assert settings["enabled"] is True
    changed = {**settings, "mail_domain": "example.com", "remediation": {"c-a": "Call 1234."}}
    assert (
        ctx.client.put("/console/v1/notices", json=changed, headers=ctx.operator()).status_code
        == 403
    )
    bad = ctx.client.put(
        "/console/v1/notices", json={**changed, "body": "Hi $nobody"}, headers=ctx.admin()
    )
    assert bad.status_code == 422 and "unknown placeholder $nobody" in bad.json()["detail"]
    assert (
        ctx.client.put("/console/v1/notices", json=changed, headers=ctx.admin()).status_code == 200
    )
    assert ctx.client.get("/console/v1/notices", headers=ctx.viewer()).json() == changed
    [record] = audit(ctx, action="notices.update")
    assert record["before"]["mail_domain"] == "" and record["after"]["mail_domain"] == "example.com"


def test_the_device_page_shows_history_per_cluster_nodes_compliance_and_note(ctx: Ctx) -> None:
    ctx.client.app.dependency_overrides[clock] = lambda: NOW  # type: ignore[attr-defined]
    cluster_id, credential = register(ctx)
    ctx.client.post("/mdm/v1/events", json=enrollment(), headers=ctx.mdm()).raise_for_status()
    events = [
        ev("alice", "DEV1", "allow", 10, command="FolderSync"),
        ev("alice", "DEV1", "block", 2),
    ]
    ctx.client.post(
        "/gateway/v1/access-events",
        json={"node_id": "node-1", "events": events},
        headers=ctx.gw(credential),
    ).raise_for_status()
    payload_reader.function.root.cache_clear()
    payload_reader.handler(sqs_event(ctx.aws, "payload"), LambdaContext())
    ctx.client.put(
        "/console/v1/email-devices/alice/DEV1/note",
        json={"text": "VIP"},
        headers=ctx.operator(),
    ).raise_for_status()
    page = ctx.client.get("/console/v1/email-devices/alice/DEV1", headers=ctx.viewer()).json()
    assert page["access_state"] == "block" and page["model"] == "iPhone 15"
    [history] = page["history"]
    assert history["cluster_id"] == cluster_id
    assert [(e["command"], e["decision"]) for e in history["events"]] == [
        ("Sync", "block"),
        ("FolderSync", "allow"),
    ]
    assert [c["kind"] for c in page["compliance_history"]] == ["enrollment"]
    assert "enrolled for alice" in page["compliance_history"][0]["summary"]
    assert page["mdm"]["mdm_device_id"] == "mdm-1"
    assert page["note"]["text"] == "VIP" and page["note"]["author"] == "operator"
    assert page["notice"]["state"] == "block"  # the block was a change: a notice is queued
    too_long = ctx.client.put(
        "/console/v1/email-devices/alice/DEV1/note",
        json={"text": "x" * 2001},
        headers=ctx.operator(),
    )
    assert too_long.status_code == 422


def test_the_current_view_exports_as_csv_in_parts(ctx: Ctx) -> None:
    ctx.client.app.dependency_overrides[clock] = lambda: NOW  # type: ignore[attr-defined]
    _, credential = register(ctx)
    events = [ev(f"user{i}", f"dev{i}", "block" if i % 2 else "allow", i) for i in range(7)]
    events.append(ev("=cmd", "dev-x", "block", 8))  # a formula-looking user name
    ctx.client.post(
        "/gateway/v1/access-events",
        json={"node_id": "node-1", "events": events},
        headers=ctx.gw(credential),
    ).raise_for_status()
    payload_reader.function.root.cache_clear()
    payload_reader.handler(sqs_event(ctx.aws, "payload"), LambdaContext())
    parts, cursor = [], None
    while True:
        params = {"access_state": "block", "sort": "user", "order": "asc", "limit": 2}
        response = ctx.client.get(
            "/console/v1/email-devices/export",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=ctx.viewer(),
        )
        assert response.status_code == 200
        assert response.headers["x-total-count"] == "4"
        parts.append(response.text)
        cursor = response.headers.get("x-next-cursor")
        if not cursor:
            break
    rows = list(csv.DictReader(io.StringIO("".join(parts))))
    assert [r["user"] for r in rows] == ["'=cmd", "user1", "user3", "user5"]
    assert {r["access_state"] for r in rows} == {"block"}
