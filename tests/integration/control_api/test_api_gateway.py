"""Gateway routes: snapshot with ETag/304, delta and 410, every policy answer signed
with the stack's key; access events queued; Device Services events recorded and
queued."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from lambdas.usecases.access_events import PayloadMessage
from lambdas.usecases.policy_versions import write_version
from seg_contract import Access, PolicyDelta, PolicySnapshot
from seg_contract.signing import Kind, SignedPayload
from tests.integration.control_api.conftest import Ctx, enrollment, register
from tests.support.policy import propose_entry


def access_batch(**event: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "at": "2026-11-27T02:00:00Z",
        "node_id": "node-1",
        "user": "alice",
        "device_id": "dev1",
        "command": "Sync",
        "decision": "allow",
        "reason": "compliant",
    }
    fields.update(event)
    return {"node_id": "node-1", "events": [fields]}


def put_entry(ctx: Ctx, cluster_id: str, device_id: str = "dev1") -> int:
    """Commit one device entry as the cluster's next version; return the version."""

    propose = propose_entry("alice", Access.ALLOW, device_id=device_id)
    container = ctx.client.app.state.container  # type: ignore[attr-defined]
    return write_version(
        cluster_id, propose, stores=container.versions, now=datetime.now(UTC)
    ).version


def test_snapshot_has_an_etag_and_answers_304_when_current(ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    first = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential))
    assert first.status_code == 200
    snapshot = PolicySnapshot.model_validate(first.json())
    assert (snapshot.cluster_id, snapshot.version) == (cluster_id, 0)
    tag = first.headers["ETag"]
    assert tag == f'"{cluster_id}-0"'
    again = ctx.client.get(
        "/gateway/v1/policy", headers={**ctx.gw(credential), "If-None-Match": tag}
    )
    assert again.status_code == 304 and again.content == b""
    settings = ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/settings",
        json={"test_mode": True},
        headers=ctx.admin(),
    )
    assert settings.json() == {"cluster_id": cluster_id, "version": 1}
    changed = ctx.client.get(
        "/gateway/v1/policy", headers={**ctx.gw(credential), "If-None-Match": tag}
    )
    assert changed.status_code == 200
    assert changed.headers["ETag"] == f'"{cluster_id}-1"'
    assert changed.json()["settings"]["test_mode"] is True


def test_delta_returns_changes_after_since_and_410_when_unavailable(ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    assert [put_entry(ctx, cluster_id, device_id=f"d{i}") for i in range(3)] == [1, 2, 3]
    delta = ctx.client.get("/gateway/v1/policy/delta?since=1", headers=ctx.gw(credential))
    assert delta.status_code == 200
    parsed = PolicyDelta.model_validate(delta.json())
    assert (parsed.since_version, parsed.version) == (1, 3)
    assert [(d.device_id, d.version) for d in parsed.devices] == [("d1", 2), ("d2", 3)]
    ahead = ctx.client.get("/gateway/v1/policy/delta?since=99", headers=ctx.gw(credential))
    assert ahead.status_code == 410
    assert "fetch the full snapshot" in ahead.json()["detail"]
    ctx.aws.dynamodb.delete_item(  # version 2's log record expired (TTL)
        TableName=ctx.aws.tables["policy_log"],
        Key={"cluster_id": {"S": cluster_id}, "version": {"N": "2"}},
    )
    expired = ctx.client.get("/gateway/v1/policy/delta?since=1", headers=ctx.gw(credential))
    assert expired.status_code == 410
    assert expired.json() == {
        "detail": "delta since 1 is no longer available; fetch the full snapshot"
    }
    current = ctx.client.get("/gateway/v1/policy/delta?since=2", headers=ctx.gw(credential))
    assert [d["device_id"] for d in current.json()["devices"]] == ["d2"]


def test_every_policy_answer_is_signed_for_the_cluster_and_version_it_states(ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    assert put_entry(ctx, cluster_id) == 1
    first = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential))
    signed = SignedPayload.from_headers(first.headers, first.content)
    statement = ctx.aws.verify(signed, cluster_id, Kind.SNAPSHOT).statement
    assert (statement.version, statement.since_version) == (1, 0)
    # The 304: the control plane vouches that version 1 is current (an empty payload).
    again = ctx.client.get(
        "/gateway/v1/policy",
        headers={**ctx.gw(credential), "If-None-Match": first.headers["ETag"]},
    )
    assert again.status_code == 304
    confirm = ctx.aws.verify(
        SignedPayload.from_headers(again.headers, b""), cluster_id, Kind.CONFIRM
    )
    assert confirm.statement.version == 1 and confirm.payload == b""
    delta = ctx.client.get("/gateway/v1/policy/delta?since=0", headers=ctx.gw(credential))
    verified = ctx.aws.verify(
        SignedPayload.from_headers(delta.headers, delta.content), cluster_id, Kind.DELTA
    )
    assert (verified.statement.since_version, verified.statement.version) == (0, 1)
    # A 410 is not signed: it only sends the node to the snapshot, which is.
    gone = ctx.client.get("/gateway/v1/policy/delta?since=99", headers=ctx.gw(credential))
    assert gone.status_code == 410 and "X-SEG-Policy-Statement" not in gone.headers


def test_delta_rejects_a_missing_or_negative_since(ctx: Ctx) -> None:
    _, credential = register(ctx)
    for query in ("", "?since=-1", "?since=abc"):
        response = ctx.client.get(f"/gateway/v1/policy/delta{query}", headers=ctx.gw(credential))
        assert response.status_code == 422, query
        assert response.json()["detail"].startswith("query.since")


def test_access_events_are_queued_for_the_credentials_cluster(ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    response = ctx.client.post(
        "/gateway/v1/access-events", json=access_batch(), headers=ctx.gw(credential)
    )
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    [message] = ctx.aws.receive_all("payload")
    queued = PayloadMessage.model_validate_json(message["Body"])
    assert queued.cluster_id == cluster_id
    assert queued.batch.events[0].user == "alice"


def test_access_events_reject_malformed_and_unknown_fields(ctx: Ctx) -> None:
    _, credential = register(ctx)
    headers = ctx.gw(credential)
    cases = [
        access_batch(decision="maybe"),
        access_batch(password="hunter2"),
        {"node_id": "n", "events": []},
        {"node_id": "n", "events": [], "cluster_id": "c-other"},
    ]
    for body in cases:
        response = ctx.client.post("/gateway/v1/access-events", json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.json()["errors"], body
        assert "hunter2" not in response.text
    not_json = ctx.client.post(
        "/gateway/v1/access-events",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert ctx.aws.receive_all("payload") == []


def test_revoked_credential_is_refused_with_403(ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    revoke = ctx.client.post(
        f"/console/v1/clusters/{cluster_id}/credentials/revoke", headers=ctx.admin()
    )
    assert revoke.status_code == 200 and len(revoke.json()["revoked"]) == 1
    response = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential))
    assert response.status_code == 403
    assert response.json() == {"detail": "gateway credential revoked"}


def test_mdm_event_is_queued_once(ctx: Ctx) -> None:
    event = enrollment()
    first = ctx.client.post("/mdm/v1/events", json=event, headers=ctx.mdm())
    assert (first.status_code, first.json()) == (
        202,
        {"event_id": event["event_id"], "status": "queued"},
    )
    second = ctx.client.post("/mdm/v1/events", json=event, headers=ctx.mdm())
    assert second.json()["status"] == "duplicate"
    [message] = ctx.aws.receive_all("compliance")
    assert json.loads(message["Body"])["mdm_device_id"] == "mdm-1"


def test_mdm_events_reject_bad_bodies(ctx: Ctx) -> None:
    good = enrollment()
    cases = [
        {**good, "type": "wipe"},
        {**good, "jailbroken": True},
        {k: v for k, v in good.items() if k != "user"},
        {**good, "eas_device_ids": []},
        {"type": "checkin", "event_id": "e1", "occurred_at": "x", "mdm_device_id": "m"},
    ]
    for body in cases:
        response = ctx.client.post("/mdm/v1/events", json=body, headers=ctx.mdm())
        assert response.status_code == 422, body
        assert isinstance(response.json()["detail"], str)


def test_checkin_of_an_unknown_device_is_404(ctx: Ctx) -> None:
    body = {
        "type": "checkin",
        "event_id": "chk-1",
        "occurred_at": "2026-11-27T01:00:00Z",
        "mdm_device_id": "never-enrolled",
        "compromised": False,
        "encrypted": True,
        "passcode": True,
    }
    response = ctx.client.post("/mdm/v1/events", json=body, headers=ctx.mdm())
    assert response.status_code == 404
    assert "never-enrolled" in response.json()["detail"]
