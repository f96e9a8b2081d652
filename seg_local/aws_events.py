"""Lambda event and context shapes, built as AWS builds them (pure, clock as a value).

The local runtime calls the real handlers with these, so a handler that parses its event
with powertools' models (``SqsModel``, ``APIGatewayWebSocket*EventModel``,
``EventBridgeModel``) sees exactly the fields it sees on AWS. Shapes follow the AWS
Lambda developer guide's sample events for SQS, API Gateway WebSocket and EventBridge
scheduled events.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"


def queue_arn(queue_name: str, region: str = REGION, account_id: str = ACCOUNT_ID) -> str:
    return f"arn:aws:sqs:{region}:{account_id}:{queue_name}"


def _epoch_ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def sqs_record(message: Mapping[str, Any], source_arn: str, region: str = REGION) -> dict:
    """One record of an SQS Lambda event from one ``ReceiveMessage`` result message
    (received with ``MessageSystemAttributeNames=["All"]`` and
    ``MessageAttributeNames=["All"]``)."""
    attributes: dict[str, str] = dict(message.get("Attributes", {}))
    record_attributes: dict[str, str] = {
        "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
        "SentTimestamp": attributes.get("SentTimestamp", "0"),
        "SenderId": attributes.get("SenderId", ACCOUNT_ID),
        "ApproximateFirstReceiveTimestamp": attributes.get(
            "ApproximateFirstReceiveTimestamp", attributes.get("SentTimestamp", "0")
        ),
    }
    for optional in (
        "MessageGroupId",
        "MessageDeduplicationId",
        "SequenceNumber",
        "AWSTraceHeader",
        "DeadLetterQueueSourceArn",
    ):
        if optional in attributes:
            record_attributes[optional] = attributes[optional]
    message_attributes = {
        name: {
            # The event uses camelCase where ReceiveMessage uses PascalCase.
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": list(value.get("BinaryListValues", [])),
            "dataType": value["DataType"],
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": record_attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody")
        or hashlib.md5(message["Body"].encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def sqs_event(messages: Sequence[Mapping[str, Any]], source_arn: str, region: str = REGION) -> dict:
    return {"Records": [sqs_record(m, source_arn, region) for m in messages]}


def failed_message_ids(response: object) -> set[str]:
    """The ``itemIdentifier``s of an SQS handler's partial batch response
    (``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``); an empty set for
    any other return value (``None`` means the whole batch succeeded)."""
    if not isinstance(response, Mapping):
        return set()
    failures = response.get("batchItemFailures") or []
    return {
        str(item["itemIdentifier"])
        for item in failures
        if isinstance(item, Mapping) and item.get("itemIdentifier")
    }


@dataclass(frozen=True)
class WebSocketApi:
    """What identifies the stand-in API in every WebSocket event."""

    api_id: str
    domain_name: str  # host:port the clients connect to
    stage: str


def _request_time(now: datetime) -> str:
    return now.strftime("%d/%b/%Y:%H:%M:%S +0000")


def _ws_request_context(
    api: WebSocketApi,
    *,
    route_key: str,
    event_type: str,
    connection_id: str,
    connected_at: datetime,
    now: datetime,
    source_ip: str,
    user_agent: str,
) -> dict[str, Any]:
    request_id = uuid.uuid4().hex[:16]
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": _request_time(now),
        "messageDirection": "IN",
        "stage": api.stage,
        "connectedAt": _epoch_ms(connected_at),
        "requestTimeEpoch": _epoch_ms(now),
        "identity": {"sourceIp": source_ip, "userAgent": user_agent},
        "requestId": request_id,
        "domainName": api.domain_name,
        "connectionId": connection_id,
        "apiId": api.api_id,
    }


def _multi(values: Mapping[str, str]) -> dict[str, list[str]]:
    return {k: [v] for k, v in values.items()}


def ws_connect_event(
    api: WebSocketApi,
    *,
    connection_id: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    source_ip: str,
    now: datetime,
) -> dict[str, Any]:
    """The ``$connect`` event: headers as the client sent them (API Gateway keeps their
    case), query string parameters only when there is a query."""
    user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), "")
    event: dict[str, Any] = {
        "headers": dict(headers),
        "multiValueHeaders": _multi(headers),
        "requestContext": _ws_request_context(
            api,
            route_key="$connect",
            event_type="CONNECT",
            connection_id=connection_id,
            connected_at=now,
            now=now,
            source_ip=source_ip,
            user_agent=user_agent,
        ),
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
        event["multiValueQueryStringParameters"] = _multi(query)
    return event


def ws_message_event(
    api: WebSocketApi,
    *,
    connection_id: str,
    body: str,
    connected_at: datetime,
    source_ip: str,
    user_agent: str,
    now: datetime,
    route_key: str = "$default",
) -> dict[str, Any]:
    context = _ws_request_context(
        api,
        route_key=route_key,
        event_type="MESSAGE",
        connection_id=connection_id,
        connected_at=connected_at,
        now=now,
        source_ip=source_ip,
        user_agent=user_agent,
    )
    context["messageId"] = uuid.uuid4().hex[:16]
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def ws_disconnect_event(
    api: WebSocketApi,
    *,
    connection_id: str,
    connected_at: datetime,
    source_ip: str,
    user_agent: str,
    status_code: int,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    context = _ws_request_context(
        api,
        route_key="$disconnect",
        event_type="DISCONNECT",
        connection_id=connection_id,
        connected_at=connected_at,
        now=now,
        source_ip=source_ip,
        user_agent=user_agent,
    )
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    headers = {"Host": api.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    return {
        "headers": headers,
        "multiValueHeaders": _multi(headers),
        "requestContext": context,
        "isBase64Encoded": False,
    }


def scheduled_event(rule_name: str, now: datetime, region: str = REGION) -> dict[str, Any]:
    """An EventBridge rule's ``Scheduled Event``."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{rule_name}"],
        "detail": {},
    }


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and powertools read."""

    function_name: str
    memory_limit_in_mb: int = 512
    timeout_s: int = 30
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline_ms: int = 0

    def __post_init__(self) -> None:
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline_ms = _epoch_ms(datetime.now(UTC)) + self.timeout_s * 1000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - _epoch_ms(datetime.now(UTC)))
