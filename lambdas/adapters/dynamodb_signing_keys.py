"""The signing-key registry (``lambdas.domain.signing_keys``) on the clusters table.

One item, ``cluster_id = "#signing-keys"`` (cluster ids never contain '#'; its ``kind``
is not "cluster", so cluster listings skip it), holding the registry's ``generation``
and its ``keys`` as a list of maps. Every write is conditioned on the generation it
read, so two admins rotating at once cannot both win: the second gets ``Conflict``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import ConditionFailed, Item, get_n, n, s, translated
from lambdas.domain.errors import Conflict
from lambdas.domain.signing_keys import KeyRegistry, KeyState, SigningKeyRecord
from lambdas.domain.timefmt import format_instant, parse_instant

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGISTRY_ID = "#signing-keys"
KIND = "signing_keys"
STORE = "signing key registry"


def _record(raw: dict[str, Any]) -> SigningKeyRecord:
    value = raw["M"]
    return SigningKeyRecord(
        kid=value["kid"]["S"],
        key_arn=value["key_arn"]["S"],
        public_key=value["public_key"]["S"],
        state=KeyState(value["state"]["S"]),
        created_at=parse_instant(value["created_at"]["S"]),
        changed_at=parse_instant(value["changed_at"]["S"]),
    )


def _value(record: SigningKeyRecord) -> dict[str, Any]:
    return {
        "M": {
            "kid": s(record.kid),
            "key_arn": s(record.key_arn),
            "public_key": s(record.public_key),
            "state": s(record.state.value),
            "created_at": s(format_instant(record.created_at)),
            "changed_at": s(format_instant(record.changed_at)),
        }
    }


class DynamoDbSigningKeys:
    """Implements ``lambdas.ports.SigningKeyStore``."""

    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def get_registry(self) -> KeyRegistry:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table, Key={"cluster_id": s(REGISTRY_ID)}, ConsistentRead=True
            )
        item: Item = dict(response.get("Item", {}))
        if not item:
            return KeyRegistry()
        keys = tuple(_record(raw) for raw in item.get("keys", {}).get("L", []))
        return KeyRegistry(generation=get_n(item, "generation"), keys=keys)

    def put_registry(self, registry: KeyRegistry, expected_generation: int) -> None:
        item: Item = {
            "cluster_id": s(REGISTRY_ID),
            "kind": s(KIND),
            "generation": n(registry.generation),
            "keys": {"L": [_value(k) for k in registry.keys]},
        }
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(cluster_id)"}
        if expected_generation:
            condition = {
                "ConditionExpression": "generation = :read",
                "ExpressionAttributeValues": {":read": n(expected_generation)},
            }
        try:
            with translated(STORE):
                self._client.put_item(TableName=self._table, Item=item, **condition)
        except ConditionFailed:
            raise Conflict(
                "the signing keys changed meanwhile: list them again and retry"
            ) from None
