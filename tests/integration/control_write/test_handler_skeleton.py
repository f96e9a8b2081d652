"""The handler skeleton on its own (``lambdas.handlers.skeleton``), with a stand-in
composition root and clock: the one mapping from the domain's typed errors to each
trigger's answer, the root built once and replaceable, the clock injected. Integration
tier: powertools' Tracer imports the X-Ray SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

from lambdas.domain.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    RevokedCredential,
    StorageError,
    Unauthenticated,
    UnknownCredential,
    UseCaseError,
)
from lambdas.handlers.skeleton import LambdaFunction, ScheduledEvent, websocket_refusal
from lambdas.handlers.ws_events import WebSocketEvent
from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE
from tests.support.events import LambdaContext, sqs_record, ws_message_event

# The stand-in handlers add no metric of their own.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
MARKED = {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE}


@pytest.mark.parametrize(
    ("error", "answer"),
    [
        (UnknownCredential("unknown"), {"statusCode": 401, "headers": MARKED, "body": "unknown"}),
        (Unauthenticated("none"), {"statusCode": 401, "body": "none"}),
        (RevokedCredential("revoked"), {"statusCode": 403, "headers": MARKED, "body": "revoked"}),
        (Forbidden("closed"), {"statusCode": 403, "body": "closed"}),
        (InvalidInput("bad"), {"statusCode": 400, "body": "bad"}),
        (NotFound("x"), None),
        (StorageError("x"), None),
    ],
)
def test_websocket_refusals_map_in_one_place(error: UseCaseError, answer: Any) -> None:
    assert websocket_refusal(error) == answer


def _websocket(raises: Exception | None, seen: list[Any]) -> Any:
    builds: list[int] = []

    def build() -> str:
        builds.append(1)
        return f"root-{len(builds)}"

    function = LambdaFunction("skeleton_test", build)
    function.clock = lambda: T0

    @function.websocket(malformed="malformed", refused="refused", refused_metric="Refused")
    def handler(event: WebSocketEvent, root: str, now: datetime) -> None:
        seen.append((event.request_context.connection_id, root, now))
        if raises is not None:
            raise raises

    return function, handler


def test_a_websocket_route_gets_the_parsed_event_the_cached_root_and_the_clock() -> None:
    seen: list[Any] = []
    function, handler = _websocket(None, seen)
    for _ in range(2):
        assert handler(ws_message_event("conn-1", "{}"), LambdaContext()) == {"statusCode": 200}
    assert seen == [("conn-1", "root-1", T0)] * 2  # built once per warm container
    function.root.cache_clear()
    handler(ws_message_event("conn-1", "{}"), LambdaContext())
    assert seen[-1][1] == "root-2"


def test_a_websocket_route_refuses_a_malformed_event_and_raises_what_is_no_refusal() -> None:
    seen: list[Any] = []
    _, handler = _websocket(None, seen)
    assert handler({"requestContext": {}}, LambdaContext()) == {
        "statusCode": 400,
        "body": "malformed",
    }
    assert seen == []
    _, refusing = _websocket(RevokedCredential("revoked"), seen)
    assert refusing(ws_message_event("c", "{}"), LambdaContext())["headers"] == MARKED
    _, failing = _websocket(StorageError("throttled"), seen)
    with pytest.raises(StorageError):
        failing(ws_message_event("c", "{}"), LambdaContext())


def test_an_sqs_function_fails_only_the_records_that_raise() -> None:
    function = LambdaFunction("skeleton_test", lambda: "root")
    function.clock = lambda: T0
    handled: list[Any] = []

    @function.sqs(json.loads, BatchProcessor(event_type=EventType.SQS))
    def handler(message: Any, root: str, now: datetime) -> None:
        if message == "poison":
            raise InvalidInput("poison")
        handled.append((message, root, now))

    arn = "arn:aws:sqs:us-east-1:123456789012:q"
    event = {
        "Records": [
            sqs_record('"a"', queue_arn=arn, message_id="m1"),
            sqs_record("not json", queue_arn=arn, message_id="m2"),
            sqs_record('"poison"', queue_arn=arn, message_id="m3"),
            sqs_record('"b"', queue_arn=arn, message_id="m4"),
        ]
    }
    assert handler(event, LambdaContext()) == {
        "batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]
    }
    assert handled == [("a", "root", T0), ("b", "root", T0)]


def test_a_scheduled_function_returns_its_summary_and_raises_its_failure() -> None:
    function = LambdaFunction("skeleton_test", lambda: "root")
    function.clock = lambda: T0

    @function.scheduled(done="done")
    def handler(event: ScheduledEvent, root: str, now: datetime) -> dict[str, Any]:
        if event.id == "boom":
            raise StorageError("throttled")
        return {"rebuild": event.rebuild, "root": root, "now": now.isoformat()}

    assert handler({"id": "e1", "rebuild": True}, LambdaContext()) == {
        "rebuild": True,
        "root": "root",
        "now": T0.isoformat(),
    }
    with pytest.raises(StorageError):
        handler({"id": "boom"}, LambdaContext())


def test_a_scheduled_event_is_read_leniently() -> None:
    assert ScheduledEvent.parse(None) == ScheduledEvent()
    assert ScheduledEvent.parse({"id": "e", "rebuild": 1}) == ScheduledEvent("e", True)
