"""Real Lambda event shapes for handler tests: SQS (standard and FIFO) records built
from messages received from (moto) SQS, API Gateway WebSocket route events, the
EventBridge scheduled event, and a Lambda context object."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"


@dataclass
class LambdaContext:
    function_name: str = "seg-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:seg-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def sqs_record(
    body: str,
    *,
    queue_arn: str,
    message_id: str | None = None,
    receipt_handle: str | None = None,
    attributes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One record of an SQS-triggered Lambda event (FIFO records carry
    ``MessageGroupId`` and ``MessageDeduplicationId`` in ``attributes``)."""
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": receipt_handle or uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now_ms,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": now_ms,
            **(attributes or {}),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def sqs_event_from_messages(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event-source mapping builds from received messages."""
    keep = {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "MessageDeduplicationId",
    }
    return {
        "Records": [
            sqs_record(
                m["Body"],
                queue_arn=queue_arn,
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                attributes={k: v for k, v in m.get("Attributes", {}).items() if k in keep},
            )
            for m in messages
        ]
    }


def _ws_context(connection_id: str, route: str, event_type: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "routeKey": route,
        "eventType": event_type,
        "extendedRequestId": uuid.uuid4().hex[:16],
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": now_ms,
        "requestTimeEpoch": now_ms,
        "identity": {"sourceIp": "203.0.113.10", "userAgent": "seg-gateway/1.0"},
        "requestId": uuid.uuid4().hex[:16],
        "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        "connectionId": connection_id,
        "apiId": "abc123",
    }


def ws_connect_event(
    connection_id: str,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """API Gateway WebSocket ``$connect`` (Lambda proxy integration)."""
    all_headers = {
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Forwarded-For": "203.0.113.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    event: dict[str, Any] = {
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "requestContext": _ws_context(connection_id, "$connect", "CONNECT"),
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return event


def ws_message_event(connection_id: str, body: str, route: str = "$default") -> dict[str, Any]:
    context = _ws_context(connection_id, route, "MESSAGE")
    context["messageId"] = uuid.uuid4().hex[:16]
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def ws_disconnect_event(
    connection_id: str, reason: str = "Client-side close frame status code '1000'"
) -> dict[str, Any]:
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "x-api-key": ""}
    context = _ws_context(connection_id, "$disconnect", "DISCONNECT")
    context["disconnectStatusCode"] = 1000
    context["disconnectReason"] = reason
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": context,
        "isBase64Encoded": False,
    }


def scheduled_event(rule: str = "seg-scheduled-checkin") -> dict[str, Any]:
    """EventBridge "Scheduled Event"."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
