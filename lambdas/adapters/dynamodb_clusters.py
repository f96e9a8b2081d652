"""Gateway clusters on the clusters table (partition ``cluster_id``).

A cluster item (``kind = "cluster"``) holds the policy version counter
(``policy_version``, taken with an atomic ``ADD``), the committed watermark
(``committed_version``, ``digest`` as 32 hex digits, ``recent_digests`` as a list of
``{v, d}``; ``lambdas.usecases.policy_versions``; an item from before committed versions
has none until its bootstrap, ``lambdas.usecases.policy_bootstrap``, which marks its
start with ``bootstrap_counter`` and ``bootstrap_at``), the settings with the version that
wrote them (written by a version's commit, ``dynamodb_policy_log``), the public sealing
key, and (written by ``dynamodb_cluster_credentials``) the hashed gateway credentials,
which this adapter never reads. The tenant-wide compliance policy lives in one more item,
``cluster_id = "#tenant"`` (cluster ids never contain '#').
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    expression_values,
    get_list,
    get_n,
    get_s,
    paged,
    to_item,
    translated,
)
from lambdas.domain.compliance import CompliancePolicy
from lambdas.domain.errors import Conflict, NotFound
from lambdas.domain.policy_bootstrap import BootstrapMark
from lambdas.domain.policy_log import Watermark, initial_watermark
from lambdas.domain.records import ClusterRecord
from lambdas.domain.timefmt import format_instant, parse_instant
from seg_contract import ClusterSettings
from seg_contract.digest import from_hex, to_hex

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "cluster store"
TENANT_ID = "#tenant"
# Everything but the credentials map: it is none of the write side's business.
_PROJECTION = (
    "cluster_id, kind, #name, created_at, policy_version, settings, settings_version, "
    "committed_version, digest, recent_digests, public_key, seeded_at, "
    "bootstrap_counter, bootstrap_at"
)


def watermark_values(watermark: Watermark) -> Item:
    """The watermark's attributes as DynamoDB values."""
    return to_item(
        {
            "committed_version": watermark.version,
            "digest": to_hex(watermark.digest),
            "recent_digests": [{"v": v, "d": to_hex(d)} for v, d in watermark.recent],
        }
    )


_SET_WATERMARK = (
    "SET committed_version = :committed_version, digest = :digest, recent_digests = :recent_digests"
)


def _key(cluster_id: str) -> Item:
    return to_item({"cluster_id": cluster_id})


def _values(attributes: Item) -> Item:
    """Attribute values as an update's expression values (``:name``)."""
    return {f":{k}": v for k, v in attributes.items()}


def parse_watermark(item: Item, settings: ClusterSettings) -> Watermark:
    if "committed_version" not in item:
        # Never written (a cluster item from before committed versions): a placeholder
        # at version 0 until its bootstrap.
        return initial_watermark(settings)
    recent = get_list(item, "recent_digests")
    return Watermark(
        version=get_n(item, "committed_version"),
        digest=from_hex(get_s(item, "digest")),
        recent=tuple((int(pair["v"]), from_hex(str(pair["d"]))) for pair in recent),
    )


def parse_cluster(item: Item) -> ClusterRecord:
    raw_settings = get_s(item, "settings")
    seeded = get_s(item, "seeded_at")
    settings = (
        ClusterSettings.model_validate_json(raw_settings) if raw_settings else ClusterSettings()
    )
    return ClusterRecord(
        cluster_id=get_s(item, "cluster_id"),
        name=get_s(item, "name"),
        created_at=parse_instant(get_s(item, "created_at")),
        policy_version=get_n(item, "policy_version"),
        settings=settings,
        settings_version=get_n(item, "settings_version"),
        watermark=parse_watermark(item, settings),
        public_key=get_s(item, "public_key"),
        seeded_at=parse_instant(seeded) if seeded else None,
        legacy="committed_version" not in item,
        bootstrap=_parse_mark(item),
    )


def _parse_mark(item: Item) -> BootstrapMark | None:
    at = get_s(item, "bootstrap_at")
    if "bootstrap_counter" not in item or not at:
        return None
    return BootstrapMark(counter=get_n(item, "bootstrap_counter"), at=parse_instant(at))


class DynamoDbClusters:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def create_cluster(
        self, cluster_id: str, name: str, created_at: datetime, public_key: str = ""
    ) -> ClusterRecord:
        item: Item = {
            **to_item(
                {
                    "cluster_id": cluster_id,
                    "kind": "cluster",
                    "name": name,
                    "created_at": format_instant(created_at),
                    "policy_version": 0,
                    "settings": ClusterSettings().model_dump_json(),
                    "settings_version": 0,
                }
            ),
            **watermark_values(initial_watermark(ClusterSettings())),
        }
        if public_key:
            item.update(to_item({"public_key": public_key}))
        try:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(cluster_id)",
                )
        except ConditionFailed:
            raise Conflict(f"cluster {cluster_id} already exists") from None
        return parse_cluster(item)

    def get_cluster(self, cluster_id: str) -> ClusterRecord | None:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table,
                Key=_key(cluster_id),
                ConsistentRead=True,
                ProjectionExpression=_PROJECTION,
                ExpressionAttributeNames={"#name": "name"},
            )
        item = response.get("Item")
        if not item or get_s(item, "kind") != "cluster":
            return None
        return parse_cluster(item)

    def list_clusters(self) -> list[ClusterRecord]:
        clusters = [
            parse_cluster(item)
            for item in paged(
                self._client,
                "scan",
                STORE,
                TableName=self._table,
                ProjectionExpression=_PROJECTION,
                FilterExpression="kind = :cluster",
                ExpressionAttributeNames={"#name": "name"},
                ExpressionAttributeValues=expression_values({":cluster": "cluster"}),
                ConsistentRead=True,
            )
        ]
        return sorted(clusters, key=lambda c: c.cluster_id)

    def _update_cluster(
        self, cluster_id: str, update: str, values: dict[str, Any], **extra: Any
    ) -> Item:
        """An update of an existing cluster item (``NotFound``: there is none); the
        attributes it returns (``ReturnValues`` in ``extra``)."""
        try:
            with translated(STORE):
                response = self._client.update_item(
                    TableName=self._table,
                    Key=_key(cluster_id),
                    UpdateExpression=update,
                    ConditionExpression="kind = :cluster",
                    ExpressionAttributeValues=expression_values({**values, ":cluster": "cluster"}),
                    **extra,
                )
        except ConditionFailed:
            raise NotFound(f"cluster {cluster_id} not found") from None
        return dict(response.get("Attributes", {}))

    def next_version(self, cluster_id: str) -> int:
        attributes = self._update_cluster(
            cluster_id, "ADD policy_version :one", {":one": 1}, ReturnValues="UPDATED_NEW"
        )
        return get_n(attributes, "policy_version")

    def _update_if(
        self, cluster_id: str, update: str, condition: str, values: Item
    ) -> ClusterRecord | None:
        """A conditional update of a cluster item; the item after it (None: the
        condition failed)."""
        try:
            with translated(STORE):
                response = self._client.update_item(
                    TableName=self._table,
                    Key=_key(cluster_id),
                    UpdateExpression=update,
                    ConditionExpression=f"kind = :cluster AND {condition}",
                    ExpressionAttributeValues={
                        **values,
                        **expression_values({":cluster": "cluster"}),
                    },
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailed:
            return None
        return parse_cluster(dict(response["Attributes"]))

    def advance_watermark(
        self, cluster_id: str, expected: int, watermark: Watermark
    ) -> ClusterRecord | None:
        # An item without a committed version never matches: its first one is set by
        # its bootstrap (``bootstrap_watermark``), never by a walk from the placeholder.
        return self._update_if(
            cluster_id,
            _SET_WATERMARK,
            "committed_version = :expected",
            {**_values(watermark_values(watermark)), **expression_values({":expected": expected})},
        )

    def mark_bootstrap(
        self, cluster_id: str, at: datetime, *, replacing: int | None = None
    ) -> ClusterRecord | None:
        # The counter is copied in the same write, so every version up to the mark's
        # counter was handed out before the mark was stored.
        values: dict[str, Any] = {":at": format_instant(at), ":zero": 0}
        unmarked = "attribute_not_exists(bootstrap_counter)"
        if replacing is not None:
            unmarked, values[":replacing"] = "bootstrap_counter = :replacing", replacing
        return self._update_if(
            cluster_id,
            "SET bootstrap_counter = if_not_exists(policy_version, :zero), bootstrap_at = :at",
            f"attribute_not_exists(committed_version) AND {unmarked}",
            expression_values(values),
        )

    def bootstrap_watermark(
        self, cluster_id: str, marked: int, watermark: Watermark
    ) -> ClusterRecord | None:
        return self._update_if(
            cluster_id,
            f"{_SET_WATERMARK} REMOVE bootstrap_counter, bootstrap_at",
            "attribute_not_exists(committed_version) AND bootstrap_counter = :marked",
            {**_values(watermark_values(watermark)), **expression_values({":marked": marked})},
        )

    def set_public_key(self, cluster_id: str, public_key: str) -> None:
        self._update_cluster(cluster_id, "SET public_key = :k", {":k": public_key})

    def mark_seeded(self, cluster_id: str, at: datetime) -> None:
        """Record that the cluster's seeding was queued (idempotent: first one stays)."""
        self._update_cluster(
            cluster_id,
            "SET seeded_at = if_not_exists(seeded_at, :at)",
            {":at": format_instant(at)},
        )

    def get_compliance_policy(self) -> CompliancePolicy:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table, Key=_key(TENANT_ID), ConsistentRead=True
            )
        raw = get_s(dict(response.get("Item", {})), "compliance_policy")
        return CompliancePolicy.model_validate_json(raw) if raw else CompliancePolicy()

    def put_compliance_policy(self, policy: CompliancePolicy, updated_at: datetime) -> None:
        with translated(STORE):
            self._client.put_item(
                TableName=self._table,
                Item=to_item(
                    {
                        "cluster_id": TENANT_ID,
                        "kind": "tenant",
                        "compliance_policy": policy.model_dump_json(),
                        "updated_at": format_instant(updated_at),
                    }
                ),
            )
