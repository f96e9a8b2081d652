"""Device Services events received, on the device_events table (partition ``event_id``):
the idempotency record of ``POST /mdm/v1/events`` and a 90-day audit trail (TTL). The
``by_device`` index lists one MDM device's events newest first (the console's compliance
history of a device)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import boto3

from lambdas.adapters.dynamodb_support import ConditionFailed, get_s, s, to_item, translated
from lambdas.domain.timefmt import format_instant
from lambdas.ports import StoredDeviceEvent

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "device event log"
RETENTION = timedelta(days=90)


class DynamoDbDeviceEvents:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def exists(self, event_id: str) -> bool:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table,
                Key={"event_id": s(event_id)},
                ConsistentRead=True,
                ProjectionExpression="event_id",
            )
        return "Item" in response

    def record(
        self, event_id: str, body: str, received_at: datetime, mdm_device_id: str = ""
    ) -> bool:
        item = to_item(
            {
                "event_id": event_id,
                "body": body,
                "received_at": format_instant(received_at),
                "expires_at": int((received_at + RETENTION).timestamp()),
            }
        )
        if mdm_device_id:
            item["mdm_device_id"] = s(mdm_device_id)
        try:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(event_id)",
                )
        except ConditionFailed:
            return False
        return True

    def for_device(self, mdm_device_id: str, limit: int) -> list[StoredDeviceEvent]:
        with translated(STORE):
            page = self._client.query(
                TableName=self._table,
                IndexName="by_device",
                KeyConditionExpression="mdm_device_id = :d",
                ExpressionAttributeValues={":d": s(mdm_device_id)},
                ScanIndexForward=False,
                Limit=limit,
            )
        return [
            StoredDeviceEvent(
                event_id=get_s(dict(item), "event_id"),
                received_at=get_s(dict(item), "received_at"),
                body=get_s(dict(item), "body"),
            )
            for item in page.get("Items", [])
        ]
