"""The SQS event-source stand-in: real event shapes, partial batch failures, redelivery
after the visibility timeout, DLQ redrive after maxReceiveCount, FIFO order per group."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parser.models import SqsModel

from lambdas import resources
from seg_local.aws_events import failed_message_ids

from .conftest import Runtime


def _sqs(rt: Runtime) -> Any:
    assert rt.cp.endpoints is not None
    return boto3.client("sqs", endpoint_url=rt.cp.endpoints.moto_endpoint, region_name="us-east-1")


def _bodies(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for e in events for r in e["Records"]]


def test_events_have_the_sqs_lambda_shape(runtime: Runtime) -> None:
    assert runtime.cp.provisioned is not None
    tag = uuid.uuid4().hex
    _sqs(runtime).send_message(
        QueueUrl=runtime.cp.provisioned.queues["payload"],
        MessageBody=json.dumps({"tag": tag}),
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "batch"}},
    )
    events = runtime.rec.wait_for(
        "payload_reader", lambda ev: any(b.get("tag") == tag for b in _bodies(ev))
    )
    event = next(
        e for e in events if any(json.loads(r["body"]).get("tag") == tag for r in e["Records"])
    )
    parsed = SqsModel.model_validate(event)  # powertools' own model of the AWS event
    record = parsed.Records[0]
    assert record.eventSource == "aws:sqs"
    assert record.eventSourceARN.endswith(":seg-rt-payload")
    assert record.awsRegion == "us-east-1"
    assert record.attributes.ApproximateReceiveCount == "1"
    assert record.messageAttributes["kind"].stringValue == "batch"
    assert record.receiptHandle


def test_failed_records_are_redelivered_then_moved_to_the_dlq(runtime: Runtime) -> None:
    prov = runtime.cp.provisioned
    assert prov is not None
    sqs = _sqs(runtime)
    ok, bad = uuid.uuid4().hex, uuid.uuid4().hex
    sqs.send_message_batch(
        QueueUrl=prov.queues["payload"],
        Entries=[
            {"Id": "ok", "MessageBody": json.dumps({"tag": ok})},
            {"Id": "bad", "MessageBody": json.dumps({"tag": bad, "fail": True})},
        ],
    )
    max_receives = resources.PAYLOAD_QUEUE.max_receive_count
    events = runtime.rec.wait_for(
        "payload_reader",
        lambda ev: sum(b.get("tag") == bad for b in _bodies(ev)) >= max_receives,
        timeout=30,
    )
    bodies = _bodies(events)
    assert sum(b.get("tag") == ok for b in bodies) == 1  # deleted after its first success
    counts = [
        r["attributes"]["ApproximateReceiveCount"]
        for e in events
        for r in e["Records"]
        if json.loads(r["body"]).get("tag") == bad
    ]
    assert counts == [str(i) for i in range(1, max_receives + 1)]
    deadline = time.monotonic() + 15
    dead: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not dead:
        dead = sqs.receive_message(QueueUrl=prov.dlqs["payload"], WaitTimeSeconds=1).get(
            "Messages", []
        )
    assert [json.loads(m["Body"])["tag"] for m in dead] == [bad]


def test_fifo_queue_keeps_each_message_group_in_order(runtime: Runtime) -> None:
    prov = runtime.cp.provisioned
    assert prov is not None
    sqs = _sqs(runtime)
    run = uuid.uuid4().hex
    for i in range(12):
        group = f"device-{i % 2}"
        sqs.send_message(
            QueueUrl=prov.queues["compliance"],
            MessageBody=json.dumps({"run": run, "group": group, "seq": i}),
            MessageGroupId=group,
            MessageDeduplicationId=f"{run}-{i}",
        )
    events = runtime.rec.wait_for(
        "compliance_reader", lambda ev: sum(b.get("run") == run for b in _bodies(ev)) == 12
    )
    mine = [b for b in _bodies(events) if b.get("run") == run]
    for group in ("device-0", "device-1"):
        seqs = [b["seq"] for b in mine if b["group"] == group]
        assert seqs == sorted(seqs)
    records = [r for e in events for r in e["Records"] if json.loads(r["body"]).get("run") == run]
    assert all(r["attributes"]["MessageGroupId"].startswith("device-") for r in records)
    assert all(r["attributes"].get("SequenceNumber") for r in records)
    assert all(len(e["Records"]) <= 10 for e in events)  # the declared batch size


def test_failure_list_parsing() -> None:
    assert failed_message_ids(None) == set()
    assert failed_message_ids({"batchItemFailures": []}) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "a"}]}) == {"a"}
