"""Notice settings and per-device notice markers on the notices table (``notice_key``).

- ``settings``: the admins' ``NoticeSettings`` as one JSON document (defaults until set).
- ``device#<email device key>``: the marker of ``lambdas.domain.notices.NoticeMarker``. Claiming a
  change is one conditional update (a new state, seen after the marker's), and on refusal
  the stored marker comes back with the error (``ReturnValuesOnConditionCheckFailure``)
  so a redelivered, not yet sent change can be queued again without another read. A
  marker expires ``MARKER_TTL`` after the change it holds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    get_s,
    n,
    s,
    translated,
)
from lambdas.domain.notices import NoticeMarker, NoticeSettings
from lambdas.domain.timefmt import parse_instant

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "notice store"
MARKER_TTL = timedelta(days=400)
_SETTINGS = {"notice_key": s("settings")}


def _key(email_device_key: str) -> dict[str, Any]:
    return {"notice_key": s(f"device#{email_device_key}")}


def _marker(email_device_key: str, item: Item) -> NoticeMarker:
    return NoticeMarker(
        email_device_key=email_device_key,
        state=get_s(item, "state"),
        observed_at=get_s(item, "observed_at"),
        edge_id=get_s(item, "edge_id"),
        outcome=get_s(item, "outcome"),
        outcome_at=get_s(item, "outcome_at"),
    )


def _expires(observed_at: str) -> dict[str, str]:
    return n(int((parse_instant(observed_at) + MARKER_TTL).timestamp()))


class DynamoDbNotices:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def settings(self) -> NoticeSettings:
        with translated(STORE):
            item = self._client.get_item(
                TableName=self._table, Key=_SETTINGS, ConsistentRead=True
            ).get("Item")
        if not item:
            return NoticeSettings()
        return NoticeSettings.model_validate_json(get_s(dict(item), "document"))

    def put_settings(self, settings: NoticeSettings) -> None:
        with translated(STORE):
            self._client.put_item(
                TableName=self._table,
                Item={**_SETTINGS, "document": s(settings.model_dump_json())},
            )

    def claim(self, marker: NoticeMarker) -> bool:
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=_key(marker.email_device_key),
                    UpdateExpression=(
                        "SET #state = :state, observed_at = :at, edge_id = :edge, "
                        "outcome = :none, outcome_at = :none, expires_at = :exp"
                    ),
                    ConditionExpression=(
                        "attribute_not_exists(notice_key) "
                        "OR (#state <> :state AND observed_at < :at)"
                    ),
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        ":state": s(marker.state),
                        ":at": s(marker.observed_at),
                        ":edge": s(marker.edge_id),
                        ":none": s(""),
                        ":exp": _expires(marker.observed_at),
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailed as refused:
            held = refused.item
            # The same change, claimed before a crash and not sent yet: queue it again.
            return get_s(held, "edge_id") == marker.edge_id and not get_s(held, "outcome")
        return True

    def release(self, email_device_key: str, observed_at: str) -> None:
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=_key(email_device_key),
                    UpdateExpression="SET #state = :allow, observed_at = :at, expires_at = :exp",
                    ConditionExpression=(
                        "attribute_exists(notice_key) AND #state <> :allow AND observed_at < :at"
                    ),
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        ":allow": s("allow"),
                        ":at": s(observed_at),
                        ":exp": _expires(observed_at),
                    },
                )
        except ConditionFailed:
            return  # never notified, already released, or a newer change holds it

    def marker(self, email_device_key: str) -> NoticeMarker | None:
        with translated(STORE):
            item = self._client.get_item(
                TableName=self._table, Key=_key(email_device_key), ConsistentRead=True
            ).get("Item")
        return _marker(email_device_key, dict(item)) if item else None

    def set_outcome(
        self, email_device_key: str, edge_id: str, *, expect: str, outcome: str, at: str
    ) -> bool:
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=_key(email_device_key),
                    UpdateExpression="SET outcome = :outcome, outcome_at = :at",
                    ConditionExpression="edge_id = :edge AND outcome = :expect",
                    ExpressionAttributeValues={
                        ":outcome": s(outcome),
                        ":at": s(at),
                        ":edge": s(edge_id),
                        ":expect": s(expect),
                    },
                )
        except ConditionFailed:
            return False
        return True
