"""Open WebSocket connections on the connections table (partition ``connection_id``;
``by_cluster`` index: ``cluster_id``, ``node_id``). ``expires_at`` (epoch seconds, the
table's TTL) removes connections whose ``$disconnect`` never arrived: API Gateway closes
every connection after 2 hours at most."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import boto3

from lambdas.adapters.dynamodb_support import Item, get_s, paged, s, to_item, translated
from lambdas.domain.records import Connection
from lambdas.domain.timefmt import format_instant, parse_instant

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "connection store"
# API Gateway's maximum connection duration (2 h) plus a margin for clock skew.
CONNECTION_LIFETIME = timedelta(hours=2, minutes=15)


def parse_connection(item: Item) -> Connection:
    return Connection(
        connection_id=get_s(item, "connection_id"),
        cluster_id=get_s(item, "cluster_id"),
        node_id=get_s(item, "node_id"),
        key_id=get_s(item, "key_id"),
        connected_at=parse_instant(get_s(item, "connected_at")),
    )


class DynamoDbConnections:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def put(self, connection: Connection) -> None:
        expires = int((connection.connected_at + CONNECTION_LIFETIME).timestamp())
        with translated(STORE):
            self._client.put_item(
                TableName=self._table,
                Item=to_item(
                    {
                        "connection_id": connection.connection_id,
                        "cluster_id": connection.cluster_id,
                        "node_id": connection.node_id,
                        "key_id": connection.key_id,
                        "connected_at": format_instant(connection.connected_at),
                        "expires_at": expires,
                    }
                ),
            )

    def get(self, connection_id: str) -> Connection | None:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table,
                Key={"connection_id": s(connection_id)},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return parse_connection(dict(item)) if item else None

    def delete(self, connection_id: str) -> None:
        with translated(STORE):
            self._client.delete_item(TableName=self._table, Key={"connection_id": s(connection_id)})

    def list_for_cluster(self, cluster_id: str) -> list[Connection]:
        return [
            parse_connection(item)
            for item in paged(
                self._client,
                "query",
                STORE,
                TableName=self._table,
                IndexName="by_cluster",
                KeyConditionExpression="cluster_id = :c",
                ExpressionAttributeValues={":c": s(cluster_id)},
            )
        ]
