"""The audit trail on the audit_log table: partition ``month`` (``YYYY-MM``), sort ``seq``
(the instant and a random suffix), so a month's records read newest first with native
paging. Records are only ever added (``attribute_not_exists``; the API's role may not
update or delete) and expire ``retention_days`` after the action (TTL)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    expression_values,
    get_s,
    one_page,
    s,
    to_item,
    translated,
)
from lambdas.domain.audit import AuditEvent
from lambdas.domain.timefmt import parse_instant

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "audit log"


def _json(item: Item, name: str) -> dict[str, Any] | None:
    raw = get_s(item, name)
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}


def parse_event(item: Item) -> AuditEvent:
    return AuditEvent(
        seq=get_s(item, "seq"),
        at=get_s(item, "at"),
        actor=get_s(item, "actor"),
        role=get_s(item, "role"),
        action=get_s(item, "action"),
        target=get_s(item, "target"),
        before=_json(item, "before"),
        after=_json(item, "after"),
        reason=get_s(item, "reason"),
    )


class DynamoDbAuditLog:
    def __init__(
        self, table_name: str, client: DynamoDBClient | None = None, *, retention_days: int = 90
    ) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")
        self._retention = timedelta(days=retention_days)

    def append(self, event: AuditEvent) -> None:
        item: Item = to_item(
            {
                "month": event.month,
                "seq": event.seq,
                "at": event.at,
                "actor": event.actor,
                "role": event.role,
                "action": event.action,
                "target": event.target,
                "reason": event.reason,
                "expires_at": int((parse_instant(event.at) + self._retention).timestamp()),
            }
        )
        for name in ("before", "after"):
            value = getattr(event, name)
            if value is not None:
                item[name] = s(json.dumps(value, sort_keys=True, default=str))
        try:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(seq)",
                )
        except ConditionFailed:
            # A random suffix collided within the same microsecond: never overwrite.
            raise RuntimeError("audit record id collision") from None

    def read_month(
        self, month: str, *, before_seq: str | None, limit: int
    ) -> tuple[list[AuditEvent], bool]:
        condition, values = "#m = :m", {":m": month}
        if before_seq is not None:
            condition, values[":before"] = f"{condition} AND seq < :before", before_seq
        items, last = one_page(
            self._client,
            "query",
            STORE,
            TableName=self._table,
            KeyConditionExpression=condition,
            ExpressionAttributeNames={"#m": "month"},
            ExpressionAttributeValues=expression_values(values),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [parse_event(item) for item in items], last is not None
