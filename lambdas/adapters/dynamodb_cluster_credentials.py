"""Gateway credentials (hashes only) on the clusters table.

Each cluster item carries a map ``credentials``: key id -> ``{"sha256", "created_at",
"revoked_at"?}``. Keeping the keys on the cluster item means one ``GetItem`` (with a
projection) authenticates a gateway call, and revoking every key is one conditional
update. A cluster has a handful of keys (rotation keeps old ones until revoked), far
below DynamoDB's 400 KB item limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    expression_values,
    get_map,
    to_item,
    translated,
)
from lambdas.domain.credentials import StoredCredential
from lambdas.domain.errors import NotFound

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ATTR = "credentials"
# Only items the clusters adapter created as clusters (not the "#tenant" item).
_IS_CLUSTER = "kind = :cluster"
_STORE = "cluster credential store"


@contextmanager
def _on_cluster(cluster_id: str) -> Iterator[None]:
    """A write conditioned on ``_IS_CLUSTER``: a failed condition means no such cluster."""
    try:
        with translated(_STORE):
            yield
    except ConditionFailed as exc:
        raise NotFound(f"cluster {cluster_id} not found") from exc


def _parse(cluster_id: str, key_id: str, value: dict[str, Any]) -> StoredCredential:
    revoked = value.get("revoked_at")
    return StoredCredential(
        cluster_id=cluster_id,
        key_id=key_id,
        secret_sha256=str(value["sha256"]),
        created_at=datetime.fromisoformat(str(value["created_at"])),
        revoked_at=datetime.fromisoformat(revoked) if revoked else None,
    )


class DynamoDbClusterCredentials:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def _item(self, cluster_id: str, projection: str, names: dict[str, str]) -> Item:
        with translated(_STORE):
            response = self._client.get_item(
                TableName=self._table,
                Key=to_item({"cluster_id": cluster_id}),
                ProjectionExpression=projection,
                ExpressionAttributeNames=names,
                ConsistentRead=True,  # a just-revoked key must fail at once
            )
        return dict(response.get("Item", {}))

    def get_credential(self, cluster_id: str, key_id: str) -> StoredCredential | None:
        item = self._item(cluster_id, "#c.#k", {"#c": ATTR, "#k": key_id})
        value = get_map(item, ATTR).get(key_id)
        return _parse(cluster_id, key_id, value) if isinstance(value, dict) and value else None

    def list_credentials(self, cluster_id: str) -> Sequence[StoredCredential]:
        item = self._item(cluster_id, "#c", {"#c": ATTR})
        keys = get_map(item, ATTR)
        found = [_parse(cluster_id, key_id, value) for key_id, value in keys.items()]
        return sorted(found, key=lambda c: c.created_at)

    def add_credential(self, credential: StoredCredential) -> None:
        value = {
            "sha256": credential.secret_sha256,
            "created_at": credential.created_at.isoformat(),
        }
        with _on_cluster(credential.cluster_id):
            # Two steps: DynamoDB cannot SET a nested key of a map that does not exist
            # yet, so the map is created first (if_not_exists) on the existing item.
            self._client.update_item(
                TableName=self._table,
                Key=to_item({"cluster_id": credential.cluster_id}),
                UpdateExpression="SET #c = if_not_exists(#c, :empty)",
                ConditionExpression=_IS_CLUSTER,
                ExpressionAttributeNames={"#c": ATTR},
                ExpressionAttributeValues=expression_values({":empty": {}, ":cluster": "cluster"}),
            )
            self._client.update_item(
                TableName=self._table,
                Key=to_item({"cluster_id": credential.cluster_id}),
                UpdateExpression="SET #c.#k = :v",
                ConditionExpression=_IS_CLUSTER,
                ExpressionAttributeNames={"#c": ATTR, "#k": credential.key_id},
                ExpressionAttributeValues=expression_values({":v": value, ":cluster": "cluster"}),
            )

    def revoke_credentials(
        self, cluster_id: str, at: datetime, key_id: str | None = None
    ) -> list[str]:
        current = self.list_credentials(cluster_id)
        targets = [
            c.key_id for c in current if not c.revoked and (key_id is None or c.key_id == key_id)
        ]
        if not targets:
            return []
        names = {"#c": ATTR}
        sets = []
        for i, target in enumerate(targets):
            names[f"#k{i}"] = target
            sets.append(f"#c.#k{i}.revoked_at = :at")
        with _on_cluster(cluster_id):
            self._client.update_item(
                TableName=self._table,
                Key=to_item({"cluster_id": cluster_id}),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=_IS_CLUSTER,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=expression_values(
                    {":at": at.isoformat(), ":cluster": "cluster"}
                ),
            )
        return targets
