"""The dashboard's email-device view on the email_devices table.

Device rows: key ``email_device_key`` holding the *observation key* (the cluster that saw
the device, then the contract's entry key: ``email_view.observation_key``), so one
cluster's gateways write only their own rows; ``view = "all"`` puts every row in the
``by_recent`` index, which only the roster's rebuild reads (the console reads the
roster). Each write is a whole-item put conditional on the row holding an older
(last_seen, event_id) pair: newest wins whatever the arrival order. It returns the row it
replaced (``ReturnValues``), or on a refused write the row that won, so the reader learns
the access-state transition (the notices to users) without an extra read. Conditional
writes cannot go through BatchWriteItem, so the reader first folds a batch to one
observation per device (``email_view.newest_per_device``). Rows written before rows were
keyed by cluster (plain entry keys) are still read, as their cluster's row.

Activity counters: items keyed ``stats#<YYYY-MM-DDTHH:MM>`` (no ``view``, so they stay
out of the index), ``ADD requests, blocks`` guarded by the set of batch fingerprints
already counted, and expiring after ``STATS_TTL_S``. The set is what makes a redelivered
batch count once, and it is bounded: a minute item holds at most ``BATCHES_PER_ITEM``
fingerprints (16 bytes each: ~4 KB, so a write costs at most 5 write units however busy
the minute). A full minute item is marked ``sharded`` and further batches go to one of 16
shard items (``stats#<minute>#<first hex digit of the fingerprint>``) with the same
bound: up to 17 x 256 = 4,352 batches a minute (fingerprints are hashes, so they spread
evenly over the shards) are counted exactly once each. Past a full shard, a batch is
added without the check (it may count twice if it is redelivered; a warning says so)
rather than grow an item toward DynamoDB's 400 KB limit.

The join: given the devices and manual_overrides tables, ``join`` reads the MDM record
and the override of email devices in two BatchGetItem calls per 100 (the email-link items
and overrides together, then the owning devices), using the key layouts of
``dynamodb_devices`` and ``dynamodb_manual_overrides``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.adapters.dynamodb_devices import LINK_PREFIX
from lambdas.adapters.dynamodb_manual_overrides import parse_override
from lambdas.adapters.dynamodb_support import refused_item
from lambdas.domain.access import ManualOverride
from lambdas.domain.email_view import (
    OBSERVATION_STRINGS,
    AccessObservation,
    ActivityCount,
    split_observation_key,
)
from lambdas.domain.errors import StorageError
from lambdas.ports import MdmFacts, ObservationWrite, ViewJoin
from seg_contract import entry_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

VIEW = "all"
STATS_PREFIX = "stats#"
STATS_TTL_S = 8 * 86_400
BATCHES_PER_ITEM = 256
STATS_SHARDS = "0123456789abcdef"
_BATCH_KEYS = 100  # BatchGetItem's limit
_UNAVAILABLE = "email device view unavailable"
_STRINGS = OBSERVATION_STRINGS
# The MDM facts of a row, and what tells whether the device still owns the email device.
_DEVICE_FACTS = (
    "mdm_device_id",
    "kind",
    "user",
    "eas_device_ids",
    "model",
    "platform",
    "os_version",
    "enrollment_state",
    "compliance_state",
)
# Newest wins: (last_seen, event_id) must grow.
_NEWER = (
    "(attribute_not_exists(#last_seen) OR #last_seen < :last_seen "
    "OR (#last_seen = :last_seen AND #event_id < :event_id))"
)
_ROOM = "NOT contains(batches, :fp) AND (attribute_not_exists(batches) OR size(batches) < :cap)"


def _s(item: dict[str, Any], name: str) -> str:
    return str(item.get(name, {}).get("S", ""))


def _row(item: dict[str, Any]) -> AccessObservation:
    cluster, key = split_observation_key(_s(item, "email_device_key"))
    fields = {name: _s(item, name) for name in _STRINGS}
    fields["cluster_id"] = fields["cluster_id"] or cluster
    return AccessObservation(
        email_device_key=key,
        enforced=bool(item.get("enforced", {}).get("BOOL", True)),
        **fields,
    )


def _projection(attributes: Iterable[str]) -> dict[str, Any]:
    """ProjectionExpression with placeholders ("user" and others are reserved words)."""
    names = {f"#p{i}": name for i, name in enumerate(sorted(set(attributes)))}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


def _facts(item: dict[str, Any], key: str) -> MdmFacts | None:
    """The device's facts, when it still reports the email device's id (a link outlives
    the id it names, see ``dynamodb_devices``)."""
    if _s(item, "kind") != "device":
        return None
    ids = [str(v.get("S", "")) for v in item.get("eas_device_ids", {}).get("L", [])]
    if key not in {entry_key(_s(item, "user"), d) for d in ids}:
        return None
    return MdmFacts(
        mdm_device_id=_s(item, "mdm_device_id"),
        model=_s(item, "model"),
        platform=_s(item, "platform"),
        os_version=_s(item, "os_version"),
        enrollment_state=_s(item, "enrollment_state") or "unknown",
        compliance_state=_s(item, "compliance_state") or "unknown",
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class DynamoDbEmailDevices:
    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        by_recent_index: str = "by_recent",
        *,
        devices_table: str | None = None,
        overrides_table: str | None = None,
        batches_per_item: int = BATCHES_PER_ITEM,
    ) -> None:
        self._table = table_name
        self._index = by_recent_index
        self._devices_table = devices_table
        self._overrides_table = overrides_table
        self._cap = batches_per_item
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    # --- writes (the payload reader) -----------------------------------------------

    def apply_observation(self, observation: AccessObservation) -> ObservationWrite:
        # A whole-item conditional put: the row holds only the newest request's facts,
        # and a put costs the same write unit as an update (and far less in moto, whose
        # update-expression parser dominates the local runtime's cost).
        item: dict[str, Any] = {n: {"S": getattr(observation, n)} for n in _STRINGS}
        item["email_device_key"] = {"S": observation.observation_key}
        item["enforced"] = {"BOOL": observation.enforced}
        item["view"] = {"S": VIEW}
        try:
            response = self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=_NEWER,
                ExpressionAttributeNames={"#last_seen": "last_seen", "#event_id": "event_id"},
                ExpressionAttributeValues={
                    ":last_seen": item["last_seen"],
                    ":event_id": item["event_id"],
                },
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                held = refused_item(exc)
                return ObservationWrite(
                    written=False,
                    previous_state=_s(held, "access_state") or None,
                    replayed=_s(held, "event_id") == observation.event_id,
                )
            raise StorageError(_UNAVAILABLE) from exc
        except BotoCoreError as exc:
            raise StorageError(_UNAVAILABLE) from exc
        old = response.get("Attributes")
        return ObservationWrite(
            written=True, previous_state=_s(dict(old), "access_state") if old else None
        )

    def add_activity(self, count: ActivityCount, fingerprint: str) -> bool:
        """Count one batch's minute once; False when it was counted already."""
        main = STATS_PREFIX + count.minute
        added, held = self._add_once(main, count, fingerprint)
        if added is not None:
            return added
        if "sharded" not in held:
            self._update(main, "SET sharded = :t", {":t": {"BOOL": True}})
        shard = f"{main}#{fingerprint[:1] if fingerprint[:1] in STATS_SHARDS else '0'}"
        added, _ = self._add_once(shard, count, fingerprint)
        if added is not None:
            return added
        logger.warning(
            "minute %s holds %d batch fingerprints: counting one without the redelivery check",
            count.minute,
            self._cap * (1 + len(STATS_SHARDS)),
        )
        self._update(
            shard,
            "ADD requests :r, blocks :b, unchecked :one",
            {":r": {"N": str(count.requests)}, ":b": {"N": str(count.blocks)}, ":one": {"N": "1"}},
        )
        return True

    def _add_once(
        self, key: str, count: ActivityCount, fingerprint: str
    ) -> tuple[bool | None, dict[str, Any]]:
        """(True, _) counted; (False, _) counted before; (None, item) the item is full."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"email_device_key": {"S": key}},
                UpdateExpression=(
                    "ADD requests :r, blocks :b, batches :f SET expires_at = :exp, #m = :m"
                ),
                ConditionExpression=_ROOM,
                ExpressionAttributeNames={"#m": "minute"},
                ExpressionAttributeValues={
                    ":r": {"N": str(count.requests)},
                    ":b": {"N": str(count.blocks)},
                    ":f": {"SS": [fingerprint]},
                    ":fp": {"S": fingerprint},
                    ":cap": {"N": str(self._cap)},
                    ":exp": {"N": str(int(time.time()) + STATS_TTL_S)},
                    ":m": {"S": count.minute},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                held = refused_item(exc)
                if fingerprint in held.get("batches", {}).get("SS", []):
                    return False, held
                return None, held
            raise StorageError(_UNAVAILABLE) from exc
        except BotoCoreError as exc:
            raise StorageError(_UNAVAILABLE) from exc
        return True, {}

    def _update(self, key: str, expression: str, values: dict[str, Any]) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"email_device_key": {"S": key}},
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc

    def stats_items(self, minute: str) -> list[dict[str, Any]]:
        """The counter items of one minute as stored (tests and tools: the bound)."""
        keys = [STATS_PREFIX + minute] + [f"{STATS_PREFIX}{minute}#{c}" for c in STATS_SHARDS]
        found = self._batch_get({self._table: keys}, {})
        return list(found[self._table].values())

    # --- reads ----------------------------------------------------------------------

    def get_many(self, observation_keys: Sequence[str]) -> dict[str, AccessObservation]:
        found = self._batch_get({self._table: list(dict.fromkeys(observation_keys))}, {})
        return {
            key: _row(item)
            for key, item in found.get(self._table, {}).items()
            if "last_seen" in item  # device rows only (counter items have none)
        }

    def all_rows(self) -> list[AccessObservation]:
        """Every row, newest first: O(devices), for the roster's rebuild and tools."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._index,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": "view"},
            "ExpressionAttributeValues": {":k": {"S": VIEW}},
            "ScanIndexForward": False,
        }
        rows: list[AccessObservation] = []
        try:
            while True:
                page = self._client.query(**kwargs)
                rows.extend(_row(dict(item)) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    return rows
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc

    def join(self, keys: Sequence[str]) -> ViewJoin | None:
        """The MDM record and the override of each email device (None: this view was
        built without the devices and overrides tables)."""
        if self._devices_table is None or self._overrides_table is None:
            return None
        unique = list(dict.fromkeys(keys))
        links, overrides_table = self._devices_table, self._overrides_table
        first = self._batch_get(
            {links: [LINK_PREFIX + k for k in unique], overrides_table: unique},
            {links: ("email_device_key", "owner")},
        )
        owners = {
            str(item["email_device_key"]["S"]): str(item["owner"]["S"])
            for item in first[links].values()
            if "owner" in item and "email_device_key" in item
        }
        records = self._batch_get({links: sorted(set(owners.values()))}, {links: _DEVICE_FACTS})
        devices: dict[str, MdmFacts] = {}
        for key, owner in owners.items():
            facts = _facts(records[links].get(owner, {}), key)
            if facts is not None:
                devices[key] = facts
        overrides: dict[str, ManualOverride] = {
            key: parse_override(item) for key, item in first[overrides_table].items()
        }
        return ViewJoin(devices=devices, overrides=overrides)

    def _batch_get(
        self, wanted: dict[str, list[str]], projections: dict[str, Sequence[str]]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """BatchGetItem over tables keyed by one string attribute: table -> key -> item
        (with the table's projection, plus its key). Retries unprocessed keys (DynamoDB
        may return part of a batch)."""
        key_names = {self._table: "email_device_key"}
        if self._devices_table is not None:
            key_names[self._devices_table] = "mdm_device_id"
        if self._overrides_table is not None:
            key_names[self._overrides_table] = "email_device_key"
        pending = [(table, key) for table, keys in wanted.items() for key in keys]
        found: dict[str, dict[str, dict[str, Any]]] = {table: {} for table in wanted}
        try:
            for start in range(0, len(pending), _BATCH_KEYS):
                request: dict[str, Any] = {}
                for table, key in pending[start : start + _BATCH_KEYS]:
                    if table not in request:
                        request[table] = {"Keys": []}
                        if table in projections:
                            request[table].update(
                                _projection([key_names[table], *projections[table]])
                            )
                    request[table]["Keys"].append({key_names[table]: {"S": key}})
                while request:
                    response = self._client.batch_get_item(RequestItems=request)
                    for table, items in response.get("Responses", {}).items():
                        name = key_names[table]
                        for item in items:
                            found[table][str(item[name]["S"])] = dict(item)
                    request = dict(response.get("UnprocessedKeys") or {})
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc
        return found

    def activity(self, minutes: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Per minute, the counts of its item and (when it filled up) its shards."""
        wanted = list(dict.fromkeys(minutes))
        main = self._batch_get({self._table: [STATS_PREFIX + m for m in wanted]}, {})[self._table]
        sharded = [m for m in wanted if main.get(STATS_PREFIX + m, {}).get("sharded")]
        shards = self._batch_get(
            {self._table: [f"{STATS_PREFIX}{m}#{c}" for m in sharded for c in STATS_SHARDS]}, {}
        )[self._table]
        found: dict[str, tuple[int, int]] = {}
        for item in [*main.values(), *shards.values()]:
            minute = _s(item, "minute")
            if not minute:
                continue
            requests, blocks = found.get(minute, (0, 0))
            found[minute] = (
                requests + int(item.get("requests", {}).get("N", "0")),
                blocks + int(item.get("blocks", {}).get("N", "0")),
            )
        return found
