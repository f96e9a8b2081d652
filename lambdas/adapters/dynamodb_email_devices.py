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

from lambdas.adapters.dynamodb_devices import LINK_PREFIX
from lambdas.adapters.dynamodb_manual_overrides import parse_override
from lambdas.adapters.dynamodb_support import (
    BATCH_KEYS,
    ConditionFailed,
    Item,
    batch_rounds,
    expression_values,
    get_bool,
    get_n,
    get_s,
    get_str_list,
    get_str_set,
    paged,
    to_item,
    translated,
)
from lambdas.domain.access import ManualOverride
from lambdas.domain.email_view import (
    OBSERVATION_STRINGS,
    AccessObservation,
    ActivityCount,
    split_observation_key,
)
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
_STORE = "email device view"
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


def _row(item: Item) -> AccessObservation:
    cluster, key = split_observation_key(get_s(item, "email_device_key"))
    fields = {name: get_s(item, name) for name in _STRINGS}
    fields["cluster_id"] = fields["cluster_id"] or cluster
    return AccessObservation(
        email_device_key=key,
        enforced=get_bool(item, "enforced") is not False,  # rows from before: enforced
        **fields,
    )


def _projection(attributes: Iterable[str]) -> dict[str, Any]:
    """ProjectionExpression with placeholders ("user" and others are reserved words)."""
    names = {f"#p{i}": name for i, name in enumerate(sorted(set(attributes)))}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


def _facts(item: Item, key: str) -> MdmFacts | None:
    """The device's facts, when it still reports the email device's id (a link outlives
    the id it names, see ``dynamodb_devices``)."""
    if get_s(item, "kind") != "device":
        return None
    ids = get_str_list(item, "eas_device_ids")
    if key not in {entry_key(get_s(item, "user"), d) for d in ids}:
        return None
    return MdmFacts(
        mdm_device_id=get_s(item, "mdm_device_id"),
        model=get_s(item, "model"),
        platform=get_s(item, "platform"),
        os_version=get_s(item, "os_version"),
        enrollment_state=get_s(item, "enrollment_state") or "unknown",
        compliance_state=get_s(item, "compliance_state") or "unknown",
    )


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
        item = to_item(
            {
                **{name: getattr(observation, name) for name in _STRINGS},
                "email_device_key": observation.observation_key,
                "enforced": observation.enforced,
                "view": VIEW,
            }
        )
        try:
            with translated(_STORE):
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
        except ConditionFailed as refused:
            return ObservationWrite(
                written=False,
                previous_state=get_s(refused.item, "access_state") or None,
                replayed=get_s(refused.item, "event_id") == observation.event_id,
            )
        old = response.get("Attributes")
        return ObservationWrite(
            written=True, previous_state=get_s(dict(old), "access_state") if old else None
        )

    def add_activity(self, count: ActivityCount, fingerprint: str) -> bool:
        """Count one batch's minute once; False when it was counted already."""
        main = STATS_PREFIX + count.minute
        added, held = self._add_once(main, count, fingerprint)
        if added is not None:
            return added
        if "sharded" not in held:
            self._update(main, "SET sharded = :t", {":t": True})
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
            {":r": count.requests, ":b": count.blocks, ":one": 1},
        )
        return True

    def _add_once(
        self, key: str, count: ActivityCount, fingerprint: str
    ) -> tuple[bool | None, Item]:
        """(True, _) counted; (False, _) counted before; (None, item) the item is full."""
        try:
            with translated(_STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=to_item({"email_device_key": key}),
                    UpdateExpression=(
                        "ADD requests :r, blocks :b, batches :f SET expires_at = :exp, #m = :m"
                    ),
                    ConditionExpression=_ROOM,
                    ExpressionAttributeNames={"#m": "minute"},
                    ExpressionAttributeValues=expression_values(
                        {
                            ":r": count.requests,
                            ":b": count.blocks,
                            ":f": {fingerprint},  # a string set (SS), ADDed to
                            ":fp": fingerprint,
                            ":cap": self._cap,
                            ":exp": int(time.time()) + STATS_TTL_S,
                            ":m": count.minute,
                        }
                    ),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailed as refused:
            if fingerprint in get_str_set(refused.item, "batches"):
                return False, refused.item
            return None, refused.item
        return True, {}

    def _update(self, key: str, expression: str, values: dict[str, Any]) -> None:
        with translated(_STORE):
            self._client.update_item(
                TableName=self._table,
                Key=to_item({"email_device_key": key}),
                UpdateExpression=expression,
                ExpressionAttributeValues=expression_values(values),
            )

    def stats_items(self, minute: str) -> list[Item]:
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
        items = paged(
            self._client,
            "query",
            _STORE,
            TableName=self._table,
            IndexName=self._index,
            KeyConditionExpression="#k = :k",
            ExpressionAttributeNames={"#k": "view"},
            ExpressionAttributeValues=expression_values({":k": VIEW}),
            ScanIndexForward=False,
        )
        return [_row(item) for item in items]

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
            get_s(item, "email_device_key"): get_s(item, "owner")
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
    ) -> dict[str, dict[str, Item]]:
        """BatchGetItem over tables keyed by one string attribute: table -> key -> item
        (with the table's projection, plus its key). Unprocessed keys are asked again
        (``batch_rounds``: a bounded number of times)."""
        key_names = {self._table: "email_device_key"}
        if self._devices_table is not None:
            key_names[self._devices_table] = "mdm_device_id"
        if self._overrides_table is not None:
            key_names[self._overrides_table] = "email_device_key"
        pending = [(table, key) for table, keys in wanted.items() for key in keys]
        found: dict[str, dict[str, Item]] = {table: {} for table in wanted}
        for start in range(0, len(pending), BATCH_KEYS):
            request: dict[str, Any] = {}
            for table, key in pending[start : start + BATCH_KEYS]:
                if table not in request:
                    request[table] = {"Keys": []}
                    if table in projections:
                        request[table].update(_projection([key_names[table], *projections[table]]))
                request[table]["Keys"].append(to_item({key_names[table]: key}))
            for responses in batch_rounds(self._client, request, _STORE):
                for table, items in responses.items():
                    name = key_names[table]
                    for item in items:
                        found[table][get_s(item, name)] = dict(item)
        return found

    def activity(self, minutes: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Per minute, the counts of its item and (when it filled up) its shards."""
        wanted = list(dict.fromkeys(minutes))
        main = self._batch_get({self._table: [STATS_PREFIX + m for m in wanted]}, {})[self._table]
        sharded = [m for m in wanted if "sharded" in main.get(STATS_PREFIX + m, {})]
        shards = self._batch_get(
            {self._table: [f"{STATS_PREFIX}{m}#{c}" for m in sharded for c in STATS_SHARDS]}, {}
        )[self._table]
        found: dict[str, tuple[int, int]] = {}
        for item in [*main.values(), *shards.values()]:
            minute = get_s(item, "minute")
            if not minute:
                continue
            requests, blocks = found.get(minute, (0, 0))
            found[minute] = (
                requests + get_n(item, "requests"),
                blocks + get_n(item, "blocks"),
            )
        return found
