"""The policy log on the policy_log table (``cluster_id``, ``version``), and the one
transaction that commits a policy version across three tables.

A record: ``state`` (pending | committed | abandoned), ``changes`` (a list of
``{kind, key, old, new}``, the digest terms as 32 hex digits, ``old`` NULL for a key that
was absent), ``first_seen`` (pending: when an advancer first missed it),
``settled_at`` and ``expires_at`` (the table's TTL, ``LOG_RETENTION`` after settling).

A commit is one TransactWriteItems: the log record (condition: the version is not
settled yet), every entry and credential (condition: the stored version is the one the
plan read, or the key is absent), and for a settings change an update of the cluster
item (condition: the settings version read). Which condition failed is read from the
cancellation reasons: the log record's means the version was fenced; any other means
something moved (re-read and retry).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_policy_entries import credential_item, device_item
from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    TransactionCancelled,
    attr,
    expression_values,
    get_list,
    get_n,
    get_s,
    n,
    paged,
    s,
    to_item,
    translated,
)
from lambdas.domain.errors import CommitConflict, NotFound, StorageError, VersionFenced
from lambdas.domain.policy_commit import CommitPlan
from lambdas.domain.policy_log import LOG_RETENTION, Change, ChangeKind, LogRecord, LogState
from lambdas.domain.timefmt import format_instant, parse_instant
from seg_contract.digest import from_hex, to_hex

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "policy log"
_PAGE = 100  # records per page: an advance that stops early reads one page
_UNSETTLED = "attribute_not_exists(version) OR #state = :pending"
# Reasons of a cancelled transaction that mean "an item's state changed under us".
_RACED = {"ConditionalCheckFailed", "TransactionConflict"}


def _changes(changes: tuple[Change, ...]) -> Any:
    return attr(
        [
            {
                "kind": c.kind.value,
                "key": c.key,
                "old": to_hex(c.old_term) if c.old_term is not None else None,
                "new": to_hex(c.new_term),
            }
            for c in changes
        ]
    )


def parse_record(item: Item) -> LogRecord:
    raw = get_list(item, "changes")
    first_seen = get_s(item, "first_seen")
    return LogRecord(
        version=get_n(item, "version"),
        state=LogState(get_s(item, "state")),
        changes=tuple(
            Change(
                kind=ChangeKind(str(c["kind"])),
                key=str(c["key"]),
                old_term=from_hex(str(c["old"])) if c.get("old") is not None else None,
                new_term=from_hex(str(c["new"])),
            )
            for c in raw
        ),
        first_seen=parse_instant(first_seen) if first_seen else None,
    )


class DynamoDbPolicyLog:
    def __init__(
        self,
        table_name: str,
        *,
        entries_table: str,
        clusters_table: str,
        client: DynamoDBClient | None = None,
    ) -> None:
        self._table = table_name
        self._entries = entries_table
        self._clusters = clusters_table
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def _key(self, cluster_id: str, version: int) -> Item:
        return to_item({"cluster_id": cluster_id, "version": version})

    @staticmethod
    def _expiry(at: datetime) -> dict[str, str]:
        return n(int((at + LOG_RETENTION).timestamp()))

    # --- commit ---------------------------------------------------------------------

    def _entry_put(self, item: Item, expected: int | None) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._entries, "Item": item}
        if expected is None:
            put["ConditionExpression"] = "attribute_not_exists(entry_key)"
        else:
            put["ConditionExpression"] = "version = :expected"
            put["ExpressionAttributeValues"] = expression_values({":expected": expected})
        return {"Put": put}

    def _transaction(self, cluster_id: str, plan: CommitPlan, at: datetime) -> list[Any]:
        record: Item = {
            **self._key(cluster_id, plan.version),
            **to_item({"state": LogState.COMMITTED.value, "settled_at": format_instant(at)}),
            "changes": _changes(plan.changes),
            "expires_at": self._expiry(at),
        }
        items: list[Any] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": record,
                    "ConditionExpression": _UNSETTLED,
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": expression_values(
                        {":pending": LogState.PENDING.value}
                    ),
                }
            }
        ]
        items += [self._entry_put(device_item(cluster_id, e), v) for e, v in plan.devices]
        items += [self._entry_put(credential_item(cluster_id, c), v) for c, v in plan.credentials]
        if plan.settings is not None:
            settings, expected = plan.settings
            items.append(
                {
                    "Update": {
                        "TableName": self._clusters,
                        "Key": {"cluster_id": s(cluster_id)},
                        "UpdateExpression": "SET settings = :s, settings_version = :v",
                        "ConditionExpression": "kind = :cluster AND settings_version = :read",
                        "ExpressionAttributeValues": expression_values(
                            {
                                ":s": settings.model_dump_json(),
                                ":v": plan.version,
                                ":read": expected,
                                ":cluster": "cluster",
                            }
                        ),
                    }
                }
            )
        return items

    def commit(self, cluster_id: str, plan: CommitPlan, at: datetime) -> None:
        try:
            with translated(STORE):
                self._client.transact_write_items(
                    TransactItems=self._transaction(cluster_id, plan, at)
                )
        except TransactionCancelled as exc:
            reasons = exc.reasons
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise VersionFenced(cluster_id, plan.version) from exc
            if plan.settings is not None and reasons and reasons[-1] == "ConditionalCheckFailed":
                self._require_cluster(cluster_id)
            if any(r in _RACED for r in reasons):
                raise CommitConflict(f"version {plan.version} of {cluster_id} raced") from exc
            raise StorageError(f"{STORE} unavailable") from exc

    def _require_cluster(self, cluster_id: str) -> None:
        with translated(STORE):
            found = self._client.get_item(
                TableName=self._clusters,
                Key={"cluster_id": s(cluster_id)},
                ProjectionExpression="kind",
                ConsistentRead=True,
            ).get("Item")
        if not found or get_s(dict(found), "kind") != "cluster":
            raise NotFound(f"cluster {cluster_id} not found")

    # --- reading and settling -------------------------------------------------------

    def read(self, cluster_id: str, after: int, upto: int) -> Iterator[LogRecord]:
        if upto <= after:
            return
        for item in paged(
            self._client,
            "query",
            STORE,
            TableName=self._table,
            KeyConditionExpression="cluster_id = :c AND version BETWEEN :a AND :b",
            ExpressionAttributeValues=expression_values(
                {":c": cluster_id, ":a": after + 1, ":b": upto}
            ),
            ConsistentRead=True,
            PaginationConfig={"PageSize": _PAGE},
        ):
            yield parse_record(item)

    def mark_pending(self, cluster_id: str, version: int, at: datetime) -> bool:
        try:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(cluster_id, version),
                        **to_item(
                            {"state": LogState.PENDING.value, "first_seen": format_instant(at)}
                        ),
                        "expires_at": self._expiry(at),
                    },
                    ConditionExpression="attribute_not_exists(version)",
                )
        except ConditionFailed:
            return False
        return True

    def abandon(self, cluster_id: str, version: int, at: datetime, *, fence: bool) -> bool:
        condition = "#state = :pending" if fence else _UNSETTLED
        try:
            with translated(STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=self._key(cluster_id, version),
                    UpdateExpression="SET #state = :abandoned, settled_at = :at, expires_at = :exp",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        **expression_values(
                            {
                                ":pending": LogState.PENDING.value,
                                ":abandoned": LogState.ABANDONED.value,
                                ":at": format_instant(at),
                            }
                        ),
                        ":exp": self._expiry(at),
                    },
                )
        except ConditionFailed:
            return False
        return True
