"""Adapters translate AWS errors into typed ones (botocore's ClientError never crosses),
and the edges of the write side: idempotent MDM events, gone connections, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from lambdas.adapters.apigw_connections import ApiGatewayConnections
from lambdas.adapters.dynamodb_clusters import DynamoDbClusters
from lambdas.adapters.dynamodb_devices import DynamoDbDevices
from lambdas.adapters.sqs_compliance_queue import SqsComplianceQueue
from lambdas.domain.errors import (
    Conflict,
    ConnectionGone,
    InvalidInput,
    NotFound,
    PushFailed,
    StorageError,
)
from lambdas.domain.mdm_events import MDM_EVENT
from lambdas.handlers import compliance_reader
from lambdas.usecases.device_events import record_device_event
from seg_contract import Access

from .conftest import World, device_updates


class _GoneFor:
    """The moto management client, except that some connections are gone."""

    def __init__(self, client: Any, gone: set[str]) -> None:
        self._client = client
        self._gone = gone

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> Any:
        if ConnectionId in self._gone:
            raise ClientError(
                {
                    "Error": {"Code": "GoneException", "Message": "gone"},
                    "ResponseMetadata": {"HTTPStatusCode": 410},
                },
                "PostToConnection",
            )
        return self._client.post_to_connection(ConnectionId=ConnectionId, Data=Data)


def test_gone_connections_are_forgotten_and_the_rest_still_get_the_push(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster_id, credential = world.cluster()
    for node in ("a", "b", "c"):
        world.connect(credential, f"node-{node}", f"conn-{node}")
    poster = ApiGatewayConnections("", _GoneFor(world.aws.apigw, {"conn-b"}))  # type: ignore[arg-type]
    stores = replace(compliance_reader.function.root(), poster=poster)
    monkeypatch.setattr(compliance_reader.function, "root", lambda: stores)

    world.enroll("mdm-1", "alice", "dev1")
    world.drain()

    assert len(device_updates(world.posted("conn-a"))) == 1
    assert len(device_updates(world.posted("conn-c"))) == 1
    assert world.posted("conn-b") == []
    assert sorted(c.connection_id for c in world.connections.list_for_cluster(cluster_id)) == [
        "conn-a",
        "conn-c",
    ]


def test_management_api_errors_become_domain_errors() -> None:
    client = boto3.client(
        "apigatewaymanagementapi",
        region_name="us-east-1",
        endpoint_url="https://x.execute-api.us-east-1.amazonaws.com/prod",
    )
    adapter = ApiGatewayConnections("", client)
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "GoneException", http_status_code=410)
        stub.add_client_error("post_to_connection", "LimitExceededException", http_status_code=429)
        stub.add_client_error("delete_connection", "GoneException", http_status_code=410)
        stub.add_client_error("delete_connection", "ForbiddenException", http_status_code=403)
        with pytest.raises(ConnectionGone) as gone:
            adapter.post("c1", b"{}")
        assert gone.value.connection_id == "c1"
        with pytest.raises(PushFailed, match="LimitExceededException"):
            adapter.post("c1", b"{}")
        adapter.disconnect("c1")  # already gone: fine
        with pytest.raises(PushFailed, match="ForbiddenException"):
            adapter.disconnect("c1")
    with pytest.raises(ValueError, match="endpoint"):
        ApiGatewayConnections("")


def test_storage_failures_surface_as_storage_errors(world: World) -> None:
    devices = DynamoDbDevices("no-such-table", world.aws.dynamodb)
    with pytest.raises(StorageError, match="device store unavailable"):
        devices.get("mdm-1")
    clusters = DynamoDbClusters("no-such-table", world.aws.dynamodb)
    with pytest.raises(StorageError):
        clusters.list_clusters()
    queue = SqsComplianceQueue(world.aws.queues["compliance"] + "-nope", world.aws.sqs)
    with pytest.raises(StorageError, match="compliance queue"):
        queue.send("{}", group_id="g", dedup_id="d")


def test_mdm_events_are_idempotent_by_event_id(world: World) -> None:
    body = {
        "type": "enrollment",
        "event_id": "evt-same",
        "occurred_at": world.clock.now.isoformat(),
        "mdm_device_id": "mdm-1",
        "user": "alice",
        "eas_device_ids": ["dev1"],
    }
    first = world.mdm(body)
    again = world.mdm(body)
    assert (first.status, again.status) == ("queued", "duplicate")
    assert len(world.aws.receive_all("compliance")) == 1
    stored = world.aws.dynamodb.get_item(
        TableName=world.aws.settings.table("device_events"), Key={"event_id": {"S": "evt-same"}}
    )["Item"]
    assert json.loads(stored["body"]["S"])["mdm_device_id"] == "mdm-1"
    assert "expires_at" in stored


def test_events_for_devices_never_enrolled_are_refused(world: World) -> None:
    for body in (
        {
            "type": "checkin",
            "mdm_device_id": "ghost",
            "compromised": False,
            "encrypted": True,
            "passcode": True,
        },
        {"type": "unenrollment", "mdm_device_id": "ghost"},
    ):
        with pytest.raises(NotFound, match="ghost"):
            world.mdm(body)
    assert world.aws.receive_all("compliance") == []


def test_a_checkin_after_unenrollment_changes_no_posture(world: World) -> None:
    world.enroll("mdm-1", "alice", "dev1")
    world.clock.advance(minutes=1)
    world.mdm({"type": "unenrollment", "mdm_device_id": "mdm-1"})
    world.clock.advance(minutes=1)
    receipt = world.checkin("mdm-1", compromised=True)
    assert (receipt.status, receipt.applied) == ("queued", False)
    record = world.devices.get("mdm-1")
    assert record is not None and record.compromised is None


def test_an_older_enrollment_does_not_undo_an_unenrollment(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    world.clock.advance(hours=1)
    world.mdm({"type": "unenrollment", "mdm_device_id": "mdm-1"})
    late = record_device_event(
        MDM_EVENT.validate_python(
            {
                "type": "enrollment",
                "event_id": "late",
                "mdm_device_id": "mdm-1",
                "occurred_at": "2026-11-27T09:30:00Z",
                "user": "alice",
                "eas_device_ids": ["dev1"],
            }
        ),
        devices=world.devices,
        events=world.events,
        queue=world.queue,
        now=world.clock(),
    )
    assert late.applied is False
    world.drain()
    assert world.entry(cluster_id, "alice", "dev1").access is Access.BLOCK


def test_bad_override_requests_are_refused_with_the_reason(world: World) -> None:
    with pytest.raises(InvalidInput, match="action"):
        world.override("alice", "dev1", "quarantine")
    with pytest.raises(InvalidInput, match="user"):
        world.override("CORP\\", "dev1", "block")
    assert world.aws.receive_all("compliance") == []


def test_clusters_adapter_versions_and_errors(world: World) -> None:
    cluster_id, _ = world.cluster()
    assert [world.clusters.next_version(cluster_id) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(NotFound):
        world.clusters.next_version("c-missing")
    with pytest.raises(Conflict):
        world.clusters.create_cluster(cluster_id, "again", world.clock())
    assert [c.cluster_id for c in world.clusters.list_clusters()] == [cluster_id]
    world.clusters.put_compliance_policy(
        world.clusters.get_compliance_policy().model_copy(update={"require_passcode": False}),
        world.clock(),
    )
    # The tenant item is not a cluster.
    assert [c.cluster_id for c in world.clusters.list_clusters()] == [cluster_id]
    assert world.clusters.get_compliance_policy().require_passcode is False


def test_device_listing_pages_and_skips_link_items(world: World) -> None:
    for i in range(5):
        world.enroll(f"mdm-{i}", f"user{i}", f"dev{i}a", f"dev{i}b")
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        page, cursor = world.devices.list_devices(3, cursor)
        seen += [d.mdm_device_id for d in page]
        sizes.append(len(page))
        if cursor is None:
            break
    assert sizes == [3, 2]
    assert sorted(seen) == [f"mdm-{i}" for i in range(5)]
    assert world.devices.find_by_email_device("user3", "dev3b") == "mdm-3"
    assert world.devices.find_by_email_device("user3", "nope") is None
    with pytest.raises(InvalidInput):
        world.devices.list_devices(3, "!!not-a-cursor")
