"""Gateway nodes' last reported state on the gateway_nodes table (cluster_id, node_id).

``last_seen`` only moves forward: every write is conditional on the stored value being
older, so a late access event never makes a node look less recent than its keepalive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    expression_values,
    get_n,
    get_opt_float,
    get_opt_n,
    get_s,
    paged,
    to_item,
    translated,
)
from lambdas.domain.email_view import NodeSeen
from lambdas.domain.gateway_nodes import NodeReport

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_FORWARD = "attribute_not_exists(last_seen) OR last_seen < :seen"
_STORE = "gateway node store"


class DynamoDbGatewayNodes:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def _update(self, key: Item, expression: str, values: dict[str, Any], condition: str) -> None:
        try:
            with translated(_STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=expression_values(values),
                )
        except ConditionFailed:
            return  # we already know of a newer sighting: nothing to do

    def record_seen(self, seen: NodeSeen) -> None:
        self._update(
            to_item({"cluster_id": seen.cluster_id, "node_id": seen.node_id}),
            "SET last_seen = :seen",
            {":seen": seen.last_seen},
            _FORWARD,
        )

    def record_keepalive(self, report: NodeReport) -> None:
        # The figures follow the newest keepalive; last_seen the newest of anything.
        values: dict[str, Any] = {
            ":gv": report.gateway_version,
            ":at": report.reported_at or report.last_seen,
            ":dc": report.digest_check,
            ":pr": report.policy_rejections,
            ":lr": report.last_rejection,
            ":lra": report.last_rejection_at,
        }
        sets = [
            "gateway_version = :gv",
            "reported_at = :at",
            "digest_check = :dc",
            # As the node reports them (since it started): a restart clears the alert.
            "policy_rejections = :pr",
            "last_rejection = :lr",
            "last_rejection_at = :lra",
        ]
        for name in ("policy_version", "policy_age_s", "spool_depth"):
            value = getattr(report, name)
            if value is not None:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
        if report.last_verified_at:
            values[":verified"] = report.last_verified_at
            sets.append("last_verified_at = :verified")
        expression = "SET " + ", ".join(sets)
        if report.digest_mismatches:
            values[":mismatches"] = report.digest_mismatches
            expression += " ADD digest_mismatches :mismatches"
        self._update(
            to_item({"cluster_id": report.cluster_id, "node_id": report.node_id}),
            expression,
            values,
            "attribute_not_exists(reported_at) OR reported_at < :at",
        )
        self.record_seen(NodeSeen(report.cluster_id, report.node_id, report.last_seen))

    def list_nodes(self, cluster_id: str) -> list[NodeReport]:
        items = paged(
            self._client,
            "query",
            _STORE,
            TableName=self._table,
            KeyConditionExpression="cluster_id = :c",
            ExpressionAttributeValues=expression_values({":c": cluster_id}),
        )
        return [_report(cluster_id, item) for item in items]


def _report(cluster_id: str, item: Item) -> NodeReport:
    return NodeReport(
        cluster_id=cluster_id,
        node_id=get_s(item, "node_id"),
        last_seen=get_s(item, "last_seen"),
        policy_version=get_opt_n(item, "policy_version"),
        policy_age_s=get_opt_float(item, "policy_age_s"),
        spool_depth=get_opt_n(item, "spool_depth"),
        gateway_version=get_s(item, "gateway_version"),
        reported_at=get_s(item, "reported_at"),
        digest_check=get_s(item, "digest_check"),
        last_verified_at=get_s(item, "last_verified_at"),
        digest_mismatches=get_n(item, "digest_mismatches"),
        policy_rejections=get_n(item, "policy_rejections"),
        last_rejection=get_s(item, "last_rejection"),
        last_rejection_at=get_s(item, "last_rejection_at"),
    )
