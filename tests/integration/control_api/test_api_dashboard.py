"""Console dashboard: email devices (filters, search, sort, cursor paging, totals),
summary and series, device detail with per-cluster entries, overrides; MDM devices and
the compliance policy."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.api.deps import clock
from lambdas.domain.access import ManualOverride, OverrideAction
from lambdas.domain.compliance import ComplianceResult, ComplianceState
from lambdas.handlers import payload_reader
from tests.integration.control_api.conftest import Ctx, enrollment, register, sqs_event
from tests.integration.control_api.test_api_gateway import put_entry
from tests.support.events import LambdaContext

NOW = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)


def ev(user: str, device: str, decision: str, minutes_ago: int, **more: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "node_id": "node-1",
        "user": user,
        "device_id": device,
        "device_type": "iPhone",
        "command": "Sync",
        "decision": decision,
        "reason": decision,
        **more,
    }


@pytest.fixture
def seeded(ctx: Ctx) -> tuple[str, str]:
    """Five email devices seen by a gateway, processed by the payload reader."""
    ctx.client.app.dependency_overrides[clock] = lambda: NOW  # type: ignore[attr-defined]
    cluster_id, credential = register(ctx)
    events = [
        ev("alice", "DEV1", "allow", 5),
        ev("bob", "dev2", "block", 20),
        ev("carol", "dev3", "quarantine", 90),
        ev("dave", "dev4", "block", 3, rule="unknown_device"),
        ev("erin", "dev5", "allow", 1),
    ]
    response = ctx.client.post(
        "/gateway/v1/access-events",
        json={"node_id": "node-1", "events": events},
        headers=ctx.gw(credential),
    )
    assert response.status_code == 202
    payload_reader.function.root.cache_clear()
    assert payload_reader.handler(sqs_event(ctx.aws, "payload"), LambdaContext()) == {
        "batchItemFailures": []
    }
    ctx.client.post("/mdm/v1/events", json=enrollment(), headers=ctx.mdm()).raise_for_status()
    return cluster_id, credential


def listing(ctx: Ctx, **query: Any) -> dict[str, Any]:
    response = ctx.client.get("/console/v1/email-devices", params=query, headers=ctx.admin())
    assert response.status_code == 200, response.text
    return response.json()


def test_list_is_newest_first_with_total_and_mdm_facts(ctx: Ctx, seeded) -> None:
    page = listing(ctx)
    assert page["total"] == 5 and page["next_cursor"] is None
    assert [i["user"] for i in page["items"]] == ["erin", "dave", "alice", "bob", "carol"]
    alice = next(i for i in page["items"] if i["user"] == "alice")
    assert (alice["mdm_device_id"], alice["model"], alice["enrollment_state"]) == (
        "mdm-1",
        "iPhone 15",
        "enrolled",
    )
    assert alice["cluster_id"] == seeded[0] and alice["override"] is None


def test_filters_search_and_sort(ctx: Ctx, seeded) -> None:
    assert [i["user"] for i in listing(ctx, access_state="block")["items"]] == ["dave", "bob"]
    devices = ctx.client.app.state.container.devices  # type: ignore[attr-defined]
    devices.set_compliance("mdm-1", ComplianceResult(ComplianceState.COMPLIANT), NOW)
    assert [i["user"] for i in listing(ctx, compliance_state="compliant")["items"]] == ["alice"]
    assert [i["user"] for i in listing(ctx, compliance_state="unknown", q="DEV")["items"]] == [
        "erin",
        "dave",
        "bob",
        "carol",
    ]
    assert [i["user"] for i in listing(ctx, q="car")["items"]] == ["carol"]
    by_user = listing(ctx, sort="user", order="asc")["items"]
    assert [i["user"] for i in by_user] == ["alice", "bob", "carol", "dave", "erin"]


def test_cursor_pages_cover_every_row_once(ctx: Ctx, seeded) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "sort": "user", "order": "desc"}
        if cursor:
            params["cursor"] = cursor
        page = listing(ctx, **params)
        assert page["total"] == 5
        seen += [i["user"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["erin", "dave", "carol", "bob", "alice"]


def test_bad_list_queries_are_422(ctx: Ctx, seeded) -> None:
    for query in (
        {"sort": "password"},
        {"order": "sideways"},
        {"limit": 0},
        {"limit": 501},
        {"access_state": "maybe"},
        {"cursor": "!!not-a-cursor!!"},
        {"not_seen_days": -1},
        {"not_seen_days": "soon"},
        {"compliance_state": "mostly"},
        {"cluster_id": "c" * 65},
        {"q": "x" * 257},
    ):
        response = ctx.client.get("/console/v1/email-devices", params=query, headers=ctx.admin())
        assert response.status_code == 422, query
        if "limit" not in query:  # an export part may be larger than a page
            export = ctx.client.get(
                "/console/v1/email-devices/export", params=query, headers=ctx.admin()
            )
            assert export.status_code == 422, query
        assert response.json()["detail"], query
    other_order = listing(ctx, limit=1, sort="user")["next_cursor"]
    response = ctx.client.get(
        "/console/v1/email-devices",
        params={"cursor": other_order, "sort": "last_seen"},
        headers=ctx.admin(),
    )
    assert response.status_code == 422 and "sort order" in response.json()["detail"]


def test_summary_counts_and_series(ctx: Ctx, seeded) -> None:
    response = ctx.client.get(
        "/console/v1/email-devices/summary", params={"minutes": 30}, headers=ctx.admin()
    )
    body = response.json()
    assert body["counts"] == {"allow": 2, "block": 1, "quarantine": 1, "unknown": 1}
    assert body["blocked_last_hour"] == 2  # bob and dave; carol was 90 minutes ago
    assert len(body["series"]) == 30
    assert body["series"][-1]["t"] == "2026-11-27T02:30:00Z"
    assert sum(p["requests"] for p in body["series"]) == 4  # carol is outside the window
    assert sum(p["blocks"] for p in body["series"]) == 2
    too_long = ctx.client.get(
        "/console/v1/email-devices/summary", params={"minutes": 5000}, headers=ctx.admin()
    )
    assert too_long.status_code == 422


def test_detail_shows_the_entry_each_cluster_enforces(ctx: Ctx, seeded) -> None:
    cluster_id, _ = seeded
    assert put_entry(ctx, cluster_id, device_id="dev1") == 1
    detail = ctx.client.get("/console/v1/email-devices/Alice/DEV1", headers=ctx.admin())
    assert detail.status_code == 200
    body = detail.json()
    assert (body["user"], body["device_id"], body["access_state"]) == ("alice", "dev1", "allow")
    assert [(e["cluster_id"], e["access"], e["version"]) for e in body["entries"]] == [
        (cluster_id, "allow", 1)
    ]
    missing = ctx.client.get("/console/v1/email-devices/nobody/none", headers=ctx.admin())
    assert missing.status_code == 404


def test_override_is_queued_on_the_compliance_queue(ctx: Ctx, seeded) -> None:
    response = ctx.client.post(
        "/console/v1/email-devices/bob/dev2/override",
        json={"action": "allow", "reason": "CEO's phone"},
        headers=ctx.admin(),
    )
    assert (response.status_code, response.json()) == (202, {"status": "queued"})
    bodies = [json.loads(m["Body"]) for m in ctx.aws.receive_all("compliance")]
    override = next(b for b in bodies if b["type"] == "manual_override")
    assert (override["user"], override["device_id"], override["action"]) == ("bob", "dev2", "allow")
    assert override["actor"] == "admin"
    for body in ({"action": "maybe"}, {"action": "block", "until": "tomorrow"}, {}):
        bad = ctx.client.post(
            "/console/v1/email-devices/bob/dev2/override", json=body, headers=ctx.admin()
        )
        assert bad.status_code == 422, body


def test_mdm_devices_listing_and_detail(ctx: Ctx, seeded) -> None:
    page = ctx.client.get("/console/v1/devices", headers=ctx.admin()).json()
    assert [d["mdm_device_id"] for d in page["items"]] == ["mdm-1"]
    detail = ctx.client.get("/console/v1/devices/mdm-1", headers=ctx.admin()).json()
    assert detail["eas_device_ids"] == ["dev1"] and detail["user"] == "alice"
    assert ctx.client.get("/console/v1/devices/nope", headers=ctx.admin()).status_code == 404
    bad = ctx.client.get("/console/v1/devices", params={"cursor": "%%%"}, headers=ctx.admin())
    assert bad.status_code == 422


def test_compliance_policy_round_trip_requeues_devices(ctx: Ctx, seeded) -> None:
    for message in ctx.aws.receive_all("compliance"):  # the enrollment's: FIFO holds the
        ctx.aws.sqs.delete_message(  # device's group until it is deleted
            QueueUrl=ctx.aws.queues["compliance"], ReceiptHandle=message["ReceiptHandle"]
        )
    policy = ctx.client.get("/console/v1/compliance-policy", headers=ctx.admin()).json()
    assert policy["max_checkin_age_s"] == 86_400
    policy["require_passcode"] = False
    put = ctx.client.put("/console/v1/compliance-policy", json=policy, headers=ctx.admin())
    assert put.status_code == 200 and put.json()["require_passcode"] is False
    again = ctx.client.get("/console/v1/compliance-policy", headers=ctx.admin()).json()
    assert again == put.json()
    [message] = ctx.aws.receive_all("compliance")
    assert json.loads(message["Body"])["reason"] == "policy_change"
    for body in ({**policy, "max_checkin_age_s": 10}, {**policy, "block_jailbreak": True}):
        bad = ctx.client.put("/console/v1/compliance-policy", json=body, headers=ctx.admin())
        assert bad.status_code == 422


def test_an_override_shows_and_is_pending_until_the_gateway_enforces_it(ctx: Ctx, seeded) -> None:
    overrides = ctx.client.app.state.container.overrides  # type: ignore[attr-defined]
    overrides.put(ManualOverride("alice", "dev1", OverrideAction.BLOCK, "lost", "admin", NOW))
    alice = listing(ctx, q="alice")["items"][0]
    assert (alice["override"], alice["pending"]) == ("block", True)
    by_override = listing(ctx, sort="override", order="desc")["items"]
    assert by_override[0]["user"] == "alice"
