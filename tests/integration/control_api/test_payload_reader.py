"""Access events -> payload queue -> payload reader -> email_devices (and gateway_nodes).

The reader is called with real SQS event shapes built from what moto's queue holds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices
from lambdas.adapters.dynamodb_gateway_nodes import DynamoDbGatewayNodes
from lambdas.adapters.sqs_payload_queue import SqsPayloadQueue
from lambdas.domain.email_view import email_device_key, observation_key
from lambdas.handlers import payload_reader
from lambdas.usecases.access_events import PayloadMessage, accept_access_events
from seg_contract import AccessEvent, AccessEventBatch
from tests.integration.control_api.conftest import sqs_event
from tests.support.aws import AwsEnv
from tests.support.events import LambdaContext, sqs_record

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def event(at: datetime, decision: str = "allow", **over: Any) -> AccessEvent:
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "at": at,
        "node_id": "node-1",
        "user": "Alice",
        "device_id": "DEV1",
        "device_type": "iPhone",
        "user_agent": "Apple-iPhone/1",
        "command": "Sync",
        "decision": decision,
        "reason": "compliant" if decision == "allow" else "compromised",
        "rule": "entry",
    }
    fields.update(over)
    return AccessEvent(**fields)


def batch(*events: AccessEvent) -> AccessEventBatch:
    return AccessEventBatch(node_id="node-1", events=events)


@pytest.fixture
def reader(env: AwsEnv):
    payload_reader.function.root.cache_clear()
    yield lambda ev: payload_reader.handler(ev, LambdaContext())
    payload_reader.function.root.cache_clear()


def queue(env: AwsEnv) -> SqsPayloadQueue:
    return SqsPayloadQueue(env.queues["payload"], env.sqs)


def view(env: AwsEnv) -> DynamoDbEmailDevices:
    return DynamoDbEmailDevices(env.tables["email_devices"], env.dynamodb)


def row(env: AwsEnv, cluster: str = "c-a", user: str = "alice", device: str = "dev1"):
    key = observation_key(cluster, email_device_key(user, device))
    return view(env).get_many([key]).get(key)


def test_events_flow_from_queue_to_view_and_nodes(env: AwsEnv, reader) -> None:
    accept_access_events(
        batch(event(T0), event(T0 + timedelta(seconds=5), "block")),
        "c-a",
        queue(env),
        T0 + timedelta(seconds=5),
    )
    result = reader(sqs_event(env, "payload"))
    assert result == {"batchItemFailures": []}
    found = row(env)
    assert found is not None
    assert (found.access_state, found.reason, found.cluster_id, found.last_node) == (
        "block",
        "compromised",
        "c-a",
        "node-1",
    )
    nodes = DynamoDbGatewayNodes(env.tables["gateway_nodes"], env.dynamodb).list_nodes("c-a")
    assert [(n.node_id, n.last_seen) for n in nodes] == [("node-1", "2026-11-27T02:00:05.000000Z")]
    assert view(env).activity(["2026-11-27T02:00"]) == {"2026-11-27T02:00": (2, 1)}


def test_newest_wins_when_batches_arrive_out_of_order(env: AwsEnv, reader) -> None:
    newer = batch(event(T0 + timedelta(minutes=5), "block"))
    older = batch(event(T0, "allow", command="Ping"))
    accept_access_events(newer, "c-a", queue(env), T0 + timedelta(minutes=5))
    reader(sqs_event(env, "payload"))
    accept_access_events(older, "c-a", queue(env), T0 + timedelta(minutes=6))
    reader(sqs_event(env, "payload"))
    found = row(env)
    assert found is not None and (found.access_state, found.last_command) == ("block", "Sync")


def test_redelivery_changes_nothing_and_counts_once(env: AwsEnv, reader) -> None:
    body = PayloadMessage(
        cluster_id="c-a",
        received_at="2026-11-27T02:00:00.000000Z",
        batch=batch(event(T0), event(T0, "block", device_id="d2")),
    ).model_dump_json()
    arn = "arn:aws:sqs:us-east-1:123456789012:seg-test-payload"
    record = sqs_record(body, queue_arn=arn, message_id="m-1")
    assert reader({"Records": [record]}) == {"batchItemFailures": []}
    first = view(env).all_rows()
    assert reader({"Records": [record, sqs_record(body, queue_arn=arn, message_id="m-2")]}) == {
        "batchItemFailures": []
    }
    assert view(env).all_rows() == first
    assert view(env).activity(["2026-11-27T02:00"]) == {"2026-11-27T02:00": (2, 1)}


def test_same_instant_ties_are_broken_by_event_id(env: AwsEnv, reader) -> None:
    low = event(T0, "allow", event_id="a" * 32)
    high = event(T0, "block", event_id="b" * 32)
    arn = "arn:aws:sqs:us-east-1:123456789012:q"
    for first, second in ((high, low), (low, high)):
        for e in (first, second):
            body = PayloadMessage(
                cluster_id="c-a", received_at="2026-11-27T02:00:00.000000Z", batch=batch(e)
            )
            reader({"Records": [sqs_record(body.model_dump_json(), queue_arn=arn)]})
        found = row(env)
        assert found is not None and found.event_id == "b" * 32


def test_poison_record_is_the_only_failure(env: AwsEnv, reader) -> None:
    good = PayloadMessage(
        cluster_id="c-a", received_at="2026-11-27T02:00:00.000000Z", batch=batch(event(T0))
    )
    arn = "arn:aws:sqs:us-east-1:123456789012:q"
    records = [
        sqs_record(good.model_dump_json(), queue_arn=arn, message_id="ok-1"),
        sqs_record(
            '{"cluster_id": "c-a", "batch": {"not": "a batch"}}',
            queue_arn=arn,
            message_id="poison",
        ),
        sqs_record(
            good.model_copy(update={"cluster_id": "c-b"}).model_dump_json(),
            queue_arn=arn,
            message_id="ok-2",
        ),
    ]
    result = reader({"Records": records})
    assert result == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert row(env, "c-a") is not None and row(env, "c-b") is not None


def test_events_without_a_device_count_but_make_no_row(env: AwsEnv, reader) -> None:
    options = event(T0, user="", device_id="", command="OPTIONS")
    accept_access_events(batch(options), "c-a", queue(env), T0)
    reader(sqs_event(env, "payload"))
    assert view(env).all_rows() == []
    assert view(env).activity(["2026-11-27T02:00"]) == {"2026-11-27T02:00": (1, 0)}


def test_a_batch_over_the_sqs_limit_is_split(env: AwsEnv, reader) -> None:
    events = [
        event(T0 + timedelta(seconds=i), device_id=f"d{i}", user_agent="x" * 500) for i in range(12)
    ]
    accepted = accept_access_events(batch(*events), "c-a", queue(env), T0, max_message_bytes=3_000)
    assert accepted == 12
    bodies = []
    while True:
        ev = sqs_event(env, "payload")
        if not ev["Records"]:
            break
        bodies += [json.loads(r["body"]) for r in ev["Records"]]
        assert reader(ev) == {"batchItemFailures": []}
    assert len(bodies) > 1
    assert all(len(json.dumps(b)) <= 3_000 for b in bodies)
    assert sum(len(b["batch"]["events"]) for b in bodies) == 12
    assert len(view(env).all_rows()) == 12


def test_folded_events_count_every_request_once_even_when_resent(env: AwsEnv, reader) -> None:
    # A node that could not deliver folded 50 allows over two minutes and 12 blocks in
    # one minute; it resends the batch (its acknowledgement was lost).
    folded = batch(
        event(T0 + timedelta(seconds=100), count=50, first_at=T0 + timedelta(seconds=20)),
        event(T0 + timedelta(seconds=110), "block", count=12, first_at=T0 + timedelta(seconds=61)),
    )
    for _ in range(2):
        accept_access_events(folded, "c-a", queue(env), T0 + timedelta(minutes=5))
        assert reader(sqs_event(env, "payload")) == {"batchItemFailures": []}
    assert view(env).activity(["2026-11-27T02:00", "2026-11-27T02:01"]) == {
        "2026-11-27T02:00": (25, 0),
        "2026-11-27T02:01": (37, 12),
    }
    found = row(env)
    assert found is not None and found.access_state == "block"
    assert found.last_seen == "2026-11-27T02:01:50.000000Z"
