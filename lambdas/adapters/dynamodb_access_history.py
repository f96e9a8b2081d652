"""Recent access events per (cluster, email device) on the access_history table: one
item per observation key holding the bounded list (``access_history.MAX_EVENTS``, ~100
bytes an event, so at most a few KB) as compact JSON, and a version for optimistic
concurrency: the reader reads, merges and writes back on condition that nobody wrote
meanwhile (it retries when somebody did). The item expires ``access_history.RETENTION``
after its newest event."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    batch_get,
    get_n,
    get_s,
    n,
    s,
    to_item,
    translated,
)
from lambdas.domain.access_history import RETENTION, HistoryEvent, merge
from lambdas.domain.errors import StorageError
from lambdas.domain.timefmt import parse_instant

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "access history"
_ATTEMPTS = 5


def _events(item: dict[str, Any]) -> list[HistoryEvent]:
    raw = get_s(item, "events")
    return [HistoryEvent.of_row(row) for row in json.loads(raw)] if raw else []


class DynamoDbAccessHistory:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def add(self, observation_key: str, events: Sequence[HistoryEvent], now: datetime) -> None:
        key = {"observation_key": s(observation_key)}
        for _ in range(_ATTEMPTS):
            with translated(STORE):
                item = dict(
                    self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get(
                        "Item"
                    )
                    or {}
                )
            held = _events(item)
            merged = merge(held, events)
            if merged == held:
                return  # every event is already there (a redelivery)
            version = get_n(item, "version")
            newest = parse_instant(merged[0].at)
            put: dict[str, Any] = {
                "TableName": self._table,
                "Item": to_item(
                    {
                        "observation_key": observation_key,
                        "events": json.dumps([e.as_row() for e in merged], separators=(",", ":")),
                        "version": version + 1,
                        "expires_at": int((newest + RETENTION).timestamp()),
                    }
                ),
            }
            if item:
                put["ConditionExpression"] = "version = :v"
                put["ExpressionAttributeValues"] = {":v": n(version)}
            else:
                put["ConditionExpression"] = "attribute_not_exists(observation_key)"
            try:
                with translated(STORE):
                    self._client.put_item(**put)
                return
            except ConditionFailed:
                continue  # another reader wrote this device's list meanwhile: merge again
        raise StorageError(f"{STORE}: too many concurrent writers for one device")

    def get_many(self, observation_keys: Sequence[str]) -> dict[str, list[HistoryEvent]]:
        keys = list(dict.fromkeys(observation_keys))
        items = batch_get(
            self._client,
            self._table,
            [to_item({"observation_key": k}) for k in keys],
            STORE,
            consistent=False,
        )
        return {get_s(item, "observation_key"): _events(item) for item in items}
