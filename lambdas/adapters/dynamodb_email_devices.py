"""The dashboard's email-device view on the email_devices table.

Device rows: key ``email_device_key`` (the contract's entry key), ``view = "all"`` so the
``by_recent`` index lists every row by ``last_seen``, and ``access_state`` so ``by_state``
lists one state's rows by ``last_seen``: the dashboard's default view and its
access-state filter are index queries with native paging (O(page), whatever the number
of devices). Each write is conditional on the row holding an older (last_seen, event_id)
pair: newest wins whatever the arrival order. Conditional writes cannot go through
BatchWriteItem, so the reader first folds a batch to one observation per device
(``email_view.newest_per_device``).

Device counts (the dashboard's totals and summary): ``Select=COUNT`` queries of
``by_state``, one per access state. They count rows, so they are exact whatever the
redelivery, reordering or concurrency of the writes, and cost the writes nothing. A
process reuses its last count for ``TALLIES_COST_FACTOR`` times what the count took (at
most ``TALLIES_TTL_S``): a small fleet is recounted on every request, a large one at
most every few seconds however many dashboards poll, so recounting takes at most about
a tenth of the process's time. (Counters moved in a TransactWriteItems with each row
would be O(1) to read in AWS, but moto copies the whole table for every transaction:
1-5 s per new device at 1,000-5,000 devices, which the local runtime cannot afford. A
recount reads the index - about 1 RCU per 20 rows, without transferring items.)

Activity counters: items keyed ``stats#<YYYY-MM-DDTHH:MM>`` (no ``view``, so they stay
out of both indexes), ``ADD requests, blocks`` guarded by the set of batch fingerprints
already counted; they expire after ``STATS_TTL_S`` through the table's TTL attribute.

The join: given the devices and manual_overrides tables, ``join`` reads the MDM record
and the override of a page of email devices in two BatchGetItem calls (the email-link
items and overrides together, then the owning devices), using the key layouts of
``dynamodb_devices`` and ``dynamodb_manual_overrides``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.adapters.dynamodb_devices import LINK_PREFIX
from lambdas.adapters.dynamodb_manual_overrides import parse_override
from lambdas.domain.access import ManualOverride
from lambdas.ports import MdmFacts, ViewJoin
from lambdas.usecases.email_view import RULE_UNKNOWN, AccessObservation, ActivityCount, tally
from lambdas.usecases.errors import StorageError
from seg_contract import Access, entry_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

VIEW = "all"
_STATES = tuple(a.value for a in Access)
STATS_PREFIX = "stats#"
STATS_TTL_S = 8 * 86_400
_BATCH_KEYS = 100  # BatchGetItem's limit
# A count is reused for this many times what it took, at most TALLIES_TTL_S seconds.
TALLIES_COST_FACTOR = 10.0
TALLIES_TTL_S = 5.0
_UNAVAILABLE = "email device view unavailable"
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
# What a dashboard row shows: page reads fetch only these (moto's cost, and the bytes
# sent, grow with every attribute).
_DISPLAY = (
    "email_device_key",
    "user",
    "device_id",
    "device_type",
    "user_agent",
    "last_seen",
    "access_state",
    "reason",
    "rule",
    "last_command",
    "last_node",
    "cluster_id",
)
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


def _row(item: dict[str, Any]) -> AccessObservation:
    def s(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return AccessObservation(
        email_device_key=s("email_device_key"),
        enforced=bool(item.get("enforced", {}).get("BOOL", True)),
        **{name: s(name) for name in _STRINGS},
    )


def _projection(attributes: Iterable[str]) -> dict[str, Any]:
    """ProjectionExpression with placeholders ("user" and others are reserved words)."""
    names = {f"#p{i}": name for i, name in enumerate(sorted(set(attributes)))}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


def _facts(item: dict[str, Any], key: str) -> MdmFacts | None:
    """The device's facts, when it still reports the email device's id (a link outlives
    the id it names, see ``dynamodb_devices``)."""

    def s(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    if s("kind") != "device":
        return None
    ids = [str(v.get("S", "")) for v in item.get("eas_device_ids", {}).get("L", [])]
    if key not in {entry_key(s("user"), d) for d in ids}:
        return None
    return MdmFacts(
        mdm_device_id=s("mdm_device_id"),
        model=s("model"),
        platform=s("platform"),
        os_version=s("os_version"),
        enrollment_state=s("enrollment_state") or "unknown",
        compliance_state=s("compliance_state") or "unknown",
    )


class DynamoDbEmailDevices:
    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        by_recent_index: str = "by_recent",
        by_state_index: str = "by_state",
        *,
        devices_table: str | None = None,
        overrides_table: str | None = None,
        tallies_ttl_s: float = TALLIES_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table_name
        self._index = by_recent_index
        self._state_index = by_state_index
        self._devices_table = devices_table
        self._overrides_table = overrides_table
        self._tallies_ttl_s = tallies_ttl_s
        self._clock = clock
        self._tallies: tuple[float, dict[str, int]] | None = None  # (valid until, counts)
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    # --- writes (the payload reader) -----------------------------------------------

    def apply_observation(self, observation: AccessObservation) -> bool:
        # A whole-item conditional put: the row holds only the newest request's facts,
        # and a put costs the same write unit as an update (and far less in moto, whose
        # update-expression parser dominates the local runtime's cost).
        item: dict[str, Any] = {n: {"S": getattr(observation, n)} for n in _STRINGS}
        item["email_device_key"] = {"S": observation.email_device_key}
        item["enforced"] = {"BOOL": observation.enforced}
        item["view"] = {"S": VIEW}
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=_NEWER,
                ExpressionAttributeNames={"#last_seen": "last_seen", "#event_id": "event_id"},
                ExpressionAttributeValues={
                    ":last_seen": item["last_seen"],
                    ":event_id": item["event_id"],
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False  # the row already holds something newer
            raise StorageError(_UNAVAILABLE) from exc
        except BotoCoreError as exc:
            raise StorageError(_UNAVAILABLE) from exc
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
            raise StorageError(_UNAVAILABLE) from exc
        except BotoCoreError as exc:
            raise StorageError(_UNAVAILABLE) from exc
        return True

    # --- reads (the dashboard) -----------------------------------------------------

    def get(self, email_device_key: str) -> AccessObservation | None:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={"email_device_key": {"S": email_device_key}}
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc
        item = response.get("Item")
        return _row(dict(item)) if item and "view" in item else None

    def get_many(self, keys: Sequence[str]) -> dict[str, AccessObservation]:
        found = self._batch_get({self._table: list(dict.fromkeys(keys))}, {self._table: _DISPLAY})
        return {
            # Device rows only (counter items have no last_seen).
            key: _row(item)
            for key, item in found.get(self._table, {}).items()
            if "last_seen" in item
        }

    def _query_kwargs(
        self, access_state: str | None, ascending: bool, attributes: Iterable[str] | None = None
    ) -> dict[str, Any]:
        if access_state is None:
            index, partition, value = self._index, "view", VIEW
        else:
            index, partition, value = self._state_index, "access_state", access_state
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": partition},
            "ExpressionAttributeValues": {":k": {"S": value}},
            "ScanIndexForward": ascending,
        }
        if attributes is not None:
            projection = _projection(attributes)
            kwargs["ProjectionExpression"] = projection["ProjectionExpression"]
            kwargs["ExpressionAttributeNames"].update(projection["ExpressionAttributeNames"])
        return kwargs

    def recent_page(
        self,
        access_state: str | None,
        *,
        ascending: bool,
        limit: int,
        after: tuple[str, str] | None = None,
    ) -> tuple[list[AccessObservation], bool]:
        kwargs = self._query_kwargs(access_state, ascending, _DISPLAY)
        if after is not None:
            last_seen, key = after
            start = {"email_device_key": {"S": key}, "last_seen": {"S": last_seen}}
            if access_state is None:
                start["view"] = {"S": VIEW}
            else:
                start["access_state"] = {"S": access_state}
            kwargs["ExclusiveStartKey"] = start
        rows: list[AccessObservation] = []
        try:
            while len(rows) <= limit:
                # One more than asked for, so "is there a next page" needs no extra call.
                kwargs["Limit"] = limit + 1 - len(rows)
                page = self._client.query(**kwargs)
                rows.extend(_row(dict(item)) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc
        return rows[:limit], len(rows) > limit

    def window(
        self, access_state: str | None, cap: int, attributes: Iterable[str] = ()
    ) -> tuple[list[AccessObservation], bool]:
        wanted = {"email_device_key", "last_seen", *attributes}
        kwargs = self._query_kwargs(access_state, False, wanted)
        rows: list[AccessObservation] = []
        try:
            while len(rows) <= cap:
                kwargs["Limit"] = cap + 1 - len(rows)  # DynamoDB pages at 1 MB anyway
                page = self._client.query(**kwargs)
                rows.extend(_row(dict(item)) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc
        return rows[:cap], len(rows) > cap

    def all_rows(self) -> list[AccessObservation]:
        """Every row, newest first: O(devices), for tests and tools, not the dashboard."""
        kwargs = self._query_kwargs(None, False)
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

    def tallies(self) -> dict[str, int]:
        """Rows per tally, counted with ``Select=COUNT`` queries of ``by_state`` (one per
        state: ``ScannedCount`` is every row of the state, ``Count`` those the
        unknown-device rule decided), reused as the module docstring says."""
        started = self._clock()
        if self._tallies is not None and started < self._tallies[0]:
            return dict(self._tallies[1])
        counted: dict[str, int] = {}
        try:
            for state in _STATES:
                kwargs: dict[str, Any] = {
                    "TableName": self._table,
                    "IndexName": self._state_index,
                    "KeyConditionExpression": "access_state = :s",
                    "FilterExpression": "#rule = :unknown",
                    "ExpressionAttributeNames": {"#rule": "rule"},
                    "ExpressionAttributeValues": {
                        ":s": {"S": state},
                        ":unknown": {"S": RULE_UNKNOWN},
                    },
                    "Select": "COUNT",
                }
                scanned = unknown = 0
                while True:
                    page = self._client.query(**kwargs)
                    scanned += int(page.get("ScannedCount", 0))
                    unknown += int(page.get("Count", 0))
                    if "LastEvaluatedKey" not in page:
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
                counted[tally(state, "")] = scanned - unknown
                counted[tally(state, RULE_UNKNOWN)] = unknown
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(_UNAVAILABLE) from exc
        took = self._clock() - started
        valid_for = min(self._tallies_ttl_s, TALLIES_COST_FACTOR * took)
        self._tallies = (started + took + valid_for, counted)
        return dict(counted)

    def count_since(self, access_state: str, since: str) -> int:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._state_index,
            "KeyConditionExpression": "access_state = :s AND last_seen >= :since",
            "ExpressionAttributeValues": {":s": {"S": access_state}, ":since": {"S": since}},
            "Select": "COUNT",
        }
        total = 0
        try:
            while True:
                page = self._client.query(**kwargs)
                total += int(page.get("Count", 0))
                if "LastEvaluatedKey" not in page:
                    return total
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
            raise StorageError(_UNAVAILABLE) from exc
        return found
