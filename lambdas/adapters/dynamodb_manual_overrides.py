"""Console admins' overrides on the manual_overrides table (partition
``email_device_key`` = ``seg_contract.entry_key(user, device_id)``). A clear is stored as
an ``action = "clear"`` tombstone so that an older request delivered late cannot bring
an override back: every write is conditional on a newer ``updated_at``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    get_s,
    one_page,
    paged,
    s,
    to_item,
    translated,
)
from lambdas.domain.access import ManualOverride, OverrideAction
from lambdas.domain.cursors import decode_cursor, encode_cursor
from lambdas.domain.timefmt import format_instant, parse_instant
from seg_contract import entry_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "manual override store"


def parse_override(item: Item) -> ManualOverride:
    return ManualOverride(
        user=get_s(item, "user"),
        device_id=get_s(item, "device_id"),
        action=OverrideAction(get_s(item, "action")),
        reason=get_s(item, "reason"),
        actor=get_s(item, "actor"),
        updated_at=parse_instant(get_s(item, "updated_at")),
    )


class DynamoDbManualOverrides:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def get(self, user: str, device_id: str) -> ManualOverride | None:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table,
                Key={"email_device_key": s(entry_key(user, device_id))},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return parse_override(dict(item)) if item else None

    def put(self, override: ManualOverride) -> bool:
        at = format_instant(override.updated_at)
        try:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item=to_item(
                        {
                            "email_device_key": override.key,
                            "user": override.user,
                            "device_id": override.device_id,
                            "action": override.action.value,
                            "reason": override.reason,
                            "actor": override.actor,
                            "updated_at": at,
                        }
                    ),
                    ConditionExpression="attribute_not_exists(email_device_key) "
                    "OR updated_at <= :at",
                    ExpressionAttributeValues={":at": s(at)},
                )
        except ConditionFailed:
            return False
        return True

    def list_all(self) -> list[ManualOverride]:
        """Every stored override and tombstone (the console lists the effective ones)."""
        return [
            parse_override(item)
            for item in paged(self._client, "scan", STORE, TableName=self._table)
        ]

    def list_page(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[ManualOverride], str | None]:
        items, last = one_page(
            self._client,
            "scan",
            STORE,
            decode_cursor(cursor, dict) if cursor else None,
            TableName=self._table,
            Limit=max(1, min(limit, 1000)),
        )
        return [parse_override(item) for item in items], encode_cursor(last) if last else None
