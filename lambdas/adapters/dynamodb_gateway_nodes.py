"""Gateway nodes' last reported state on the gateway_nodes table (cluster_id, node_id).

``last_seen`` only moves forward: every write is conditional on the stored value being
older, so a late access event never makes a node look less recent than its keepalive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import ConditionFailed, paged, translated
from lambdas.domain.email_view import NodeSeen
from lambdas.domain.gateway_nodes import NodeReport

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_FORWARD = "attribute_not_exists(last_seen) OR last_seen < :seen"
_STORE = "gateway node store"


def _num(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name, {}).get("N")
    return str(value) if value is not None else None


class DynamoDbGatewayNodes:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def _update(
        self, key: dict[str, Any], expression: str, values: dict[str, Any], condition: str
    ) -> None:
        try:
            with translated(_STORE):
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
        except ConditionFailed:
            return  # we already know of a newer sighting: nothing to do

    def record_seen(self, seen: NodeSeen) -> None:
        self._update(
            {"cluster_id": {"S": seen.cluster_id}, "node_id": {"S": seen.node_id}},
            "SET last_seen = :seen",
            {":seen": {"S": seen.last_seen}},
            _FORWARD,
        )

    def record_keepalive(self, report: NodeReport) -> None:
        # The figures follow the newest keepalive; last_seen the newest of anything.
        values: dict[str, Any] = {
            ":gv": {"S": report.gateway_version},
            ":at": {"S": report.reported_at or report.last_seen},
            ":dc": {"S": report.digest_check},
            ":pr": {"N": str(report.policy_rejections)},
            ":lr": {"S": report.last_rejection},
            ":lra": {"S": report.last_rejection_at},
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
                values[f":{name}"] = {"N": str(value)}
                sets.append(f"{name} = :{name}")
        if report.last_verified_at:
            values[":verified"] = {"S": report.last_verified_at}
            sets.append("last_verified_at = :verified")
        expression = "SET " + ", ".join(sets)
        if report.digest_mismatches:
            values[":mismatches"] = {"N": str(report.digest_mismatches)}
            expression += " ADD digest_mismatches :mismatches"
        self._update(
            {"cluster_id": {"S": report.cluster_id}, "node_id": {"S": report.node_id}},
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
            ExpressionAttributeValues={":c": {"S": cluster_id}},
        )
        return [_report(cluster_id, item) for item in items]


def _report(cluster_id: str, item: dict[str, Any]) -> NodeReport:
    version, age, depth = (
        _num(item, "policy_version"),
        _num(item, "policy_age_s"),
        _num(item, "spool_depth"),
    )
    return NodeReport(
        cluster_id=cluster_id,
        node_id=item["node_id"]["S"],
        last_seen=item.get("last_seen", {}).get("S", ""),
        policy_version=int(version) if version is not None else None,
        policy_age_s=float(age) if age is not None else None,
        spool_depth=int(depth) if depth is not None else None,
        gateway_version=item.get("gateway_version", {}).get("S", ""),
        reported_at=item.get("reported_at", {}).get("S", ""),
        digest_check=item.get("digest_check", {}).get("S", ""),
        last_verified_at=item.get("last_verified_at", {}).get("S", ""),
        digest_mismatches=int(_num(item, "digest_mismatches") or 0),
        policy_rejections=int(_num(item, "policy_rejections") or 0),
        last_rejection=item.get("last_rejection", {}).get("S", ""),
        last_rejection_at=item.get("last_rejection_at", {}).get("S", ""),
    )
