"""Partial batch failures on the compliance FIFO queue: a poison message fails alone
(with the later messages of its own group, which must not overtake it), the rest of the
batch succeeds, and after maxReceiveCount SQS moves the poison message to the DLQ."""

from __future__ import annotations

from lambdas import resources
from lambdas.domain.messages import EvaluateDevice
from lambdas.handlers import compliance_reader
from seg_contract import Access
from tests.support.events import LambdaContext, sqs_event_from_messages, sqs_record

from .conftest import World


def test_poison_message_is_the_only_failure_of_its_batch(world: World) -> None:
    cluster_id, _ = world.cluster()
    world.enroll("mdm-1", "alice", "dev1")
    world.queue.send("{not json", group_id="poison", dedup_id="poison-1")
    world.enroll("mdm-2", "bob", "dev2")

    messages = world.receive()
    assert len(messages) == 3
    poison_id = next(m["MessageId"] for m in messages if m["Body"] == "{not json")

    response = world.invoke_reader(messages)

    assert response == {"batchItemFailures": [{"itemIdentifier": poison_id}]}
    assert world.entry(cluster_id, "alice", "dev1").access is Access.ALLOW
    assert world.entry(cluster_id, "bob", "dev2").access is Access.ALLOW


def test_a_failure_holds_back_the_rest_of_its_message_group_only(world: World) -> None:
    arn = world.queue_arn()
    world.enroll("mdm-2", "bob", "dev2")
    (ok,) = world.receive()
    bad = EvaluateDevice(mdm_device_id="never-enrolled", reason="checkin")
    later = EvaluateDevice(mdm_device_id="never-enrolled", reason="checkin", event_id="e2")
    fifo = {"MessageDeduplicationId": "x"}
    event = {
        "Records": [
            sqs_record(
                bad.model_dump_json(),
                queue_arn=arn,
                message_id="m-bad",
                attributes={**fifo, "MessageGroupId": "dev-never-enrolled"},
            ),
            sqs_record(
                ok["Body"],
                queue_arn=arn,
                message_id="m-ok",
                attributes={**fifo, "MessageGroupId": "dev-mdm-2"},
            ),
            sqs_record(
                later.model_dump_json(),
                queue_arn=arn,
                message_id="m-later",
                attributes={**fifo, "MessageGroupId": "dev-never-enrolled"},
            ),
        ]
    }
    response = compliance_reader.handler(event, LambdaContext())
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "m-bad"}, {"itemIdentifier": "m-later"}]
    }
    record = world.devices.get("mdm-2")
    assert record is not None and record.compliance_state.value == "compliant"


def test_poison_message_lands_in_the_dlq_after_max_receive_count(world: World) -> None:
    world.queue.send('{"type":"evaluate_device"}', group_id="poison", dedup_id="p")
    max_receives = resources.COMPLIANCE_QUEUE.max_receive_count
    for _ in range(max_receives):
        # VisibilityTimeout=0: make the failed message visible again at once (in AWS it
        # reappears after the queue's visibility timeout).
        messages = world.receive(visibility_timeout=0)
        assert len(messages) == 1
        response = world.invoke_reader(messages)
        assert response["batchItemFailures"] == [{"itemIdentifier": messages[0]["MessageId"]}]

    assert world.receive() == []  # the next receive moves it to the DLQ
    (dead,) = world.aws.receive_all("compliance", dlq=True)
    assert dead["Body"] == '{"type":"evaluate_device"}'
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) >= max_receives


def test_records_from_a_real_event_shape_parse(world: World) -> None:
    # The event-source mapping's JSON for one FIFO record, as AWS documents it.
    world.enroll("mdm-1", "alice", "dev1")
    (message,) = world.receive()
    event = sqs_event_from_messages([message], world.queue_arn())
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["MessageGroupId"] == "dev-mdm-1"
    assert compliance_reader.handler(event, LambdaContext()) == {"batchItemFailures": []}
