"""The dashboard's email-device view on the email_devices table.

Device rows: key ``email_device_key`` (the contract's entry key), ``view = "all"`` so the
``by_recent`` index lists every row by ``last_seen``. Each write is conditional on the
row holding an older (last_seen, event_id) pair: newest wins whatever the arrival order.
Conditional writes cannot go through BatchWriteItem, so the reader first folds a batch
to one observation per device (``email_view.newest_per_device``).

Activity counters: items keyed ``stats#<YYYY-MM-DDTHH:MM>`` (no ``view``, so they stay
out of both indexes), ``ADD requests, blocks`` guarded by the set of batch fingerprints
already counted; they expire after ``STATS_TTL_S`` through the table's TTL attribute.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.usecases.email_view import AccessObservation, ActivityCount
from lambdas.usecases.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

VIEW = "all"
STATS_PREFIX = "stats#"
STATS_TTL_S = 8 * 86_400
_STRINGS = (
    "user",
    "device_id",
    "device_type",
    "user_agent",
    "last_seen",
    "event_id",
    "last_command",
    "access_state",
    "reason",
    "rule",
    "protocol_version",
    "last_node",
    "cluster_id",
)
# Newest wins: (last_seen, event_id) must grow. Names are placeholders ("user" and
# others are DynamoDB reserved words).
_NEWER = (
    "attribute_not_exists(#last_seen) OR #last_seen < :last_seen "
    "OR (#last_seen = :last_seen AND #event_id < :event_id)"
)


def _row(item: dict[str, Any]) -> AccessObservation:
    def s(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return AccessObservation(
        email_device_key=s("email_device_key"),
        enforced=bool(item.get("enforced", {}).get("BOOL", True)),
        **{name: s(name) for name in _STRINGS},
    )


class DynamoDbEmailDevices:
    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        by_recent_index: str = "by_recent",
    ) -> None:
        self._table = table_name
        self._index = by_recent_index
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def apply_observation(self, observation: AccessObservation) -> bool:
        names = {f"#{n}": n for n in _STRINGS}
        values: dict[str, Any] = {f":{n}": {"S": getattr(observation, n)} for n in _STRINGS}
        values[":enforced"] = {"BOOL": observation.enforced}
        values[":view"] = {"S": VIEW}
        sets = [f"#{n} = :{n}" for n in _STRINGS]
        sets += [
            "enforced = :enforced",
            "#view = :view",
            "first_seen = if_not_exists(first_seen, :last_seen)",
        ]
        names["#view"] = "view"
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"email_device_key": {"S": observation.email_device_key}},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=_NEWER,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False  # the row already holds something newer
            raise StorageError("email device view unavailable") from exc
        except BotoCoreError as exc:
            raise StorageError("email device view unavailable") from exc
        return True

    def add_activity(self, count: ActivityCount, fingerprint: str) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"email_device_key": {"S": STATS_PREFIX + count.minute}},
                UpdateExpression=(
                    "ADD requests :r, blocks :b, batches :f SET expires_at = :exp, #m = :m"
                ),
                ConditionExpression="NOT contains(batches, :fp)",
                ExpressionAttributeNames={"#m": "minute"},
                ExpressionAttributeValues={
                    ":r": {"N": str(count.requests)},
                    ":b": {"N": str(count.blocks)},
                    ":f": {"SS": [fingerprint]},
                    ":fp": {"S": fingerprint},
                    ":exp": {"N": str(int(time.time()) + STATS_TTL_S)},
                    ":m": {"S": count.minute},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False  # this batch was counted already
            raise StorageError("email device view unavailable") from exc
        except BotoCoreError as exc:
            raise StorageError("email device view unavailable") from exc
        return True

    def get(self, email_device_key: str) -> AccessObservation | None:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={"email_device_key": {"S": email_device_key}}
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("email device view unavailable") from exc
        item = response.get("Item")
        return _row(dict(item)) if item and "view" in item else None

    def all_rows(self) -> list[AccessObservation]:
        rows: list[AccessObservation] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._index,
            "KeyConditionExpression": "#v = :v",
            "ExpressionAttributeNames": {"#v": "view"},
            "ExpressionAttributeValues": {":v": {"S": VIEW}},
            "ScanIndexForward": False,
        }
        try:
            while True:
                page = self._client.query(**kwargs)
                rows.extend(_row(dict(item)) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    return rows
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("email device view unavailable") from exc

    def activity(self, minutes: Sequence[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        wanted = list(dict.fromkeys(minutes))
        try:
            for start in range(0, len(wanted), 100):  # BatchGetItem takes 100 keys
                keys = [
                    {"email_device_key": {"S": STATS_PREFIX + m}}
                    for m in wanted[start : start + 100]
                ]
                request: dict[str, Any] = {
                    self._table: {
                        "Keys": keys,
                        "ProjectionExpression": "#m, requests, blocks",
                        "ExpressionAttributeNames": {"#m": "minute"},
                    }
                }
                while request:
                    response = self._client.batch_get_item(RequestItems=request)
                    for item in response.get("Responses", {}).get(self._table, []):
                        found[item["minute"]["S"]] = (
                            int(item.get("requests", {}).get("N", "0")),
                            int(item.get("blocks", {}).get("N", "0")),
                        )
                    request = dict(response.get("UnprocessedKeys") or {})
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("email device view unavailable") from exc
        return found
