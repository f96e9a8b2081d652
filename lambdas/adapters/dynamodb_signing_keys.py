"""The signing-key registry (``lambdas.domain.signing_keys``) on the clusters table.

One item, ``cluster_id = "#signing-keys"`` (cluster ids never contain '#'; its ``kind``
is not "cluster", so cluster listings skip it), holding the registry's ``generation``
and its ``keys`` as a list of maps. Every write is conditioned on the generation it
read, so two admins rotating at once cannot both win: the second gets ``Conflict``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    expression_values,
    get_list,
    get_n,
    s,
    to_item,
    translated,
)
from lambdas.domain.errors import Conflict
from lambdas.domain.signing_keys import KeyRegistry, KeyState, SigningKeyRecord
from lambdas.domain.timefmt import format_instant, parse_instant

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGISTRY_ID = "#signing-keys"
KIND = "signing_keys"
STORE = "signing key registry"


def _record(value: dict[str, Any]) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=str(value["kid"]),
        key_arn=str(value["key_arn"]),
        public_key=str(value["public_key"]),
        state=KeyState(value["state"]),
        created_at=parse_instant(str(value["created_at"])),
        changed_at=parse_instant(str(value["changed_at"])),
    )


def _value(record: SigningKeyRecord) -> dict[str, str]:
    return {
        "kid": record.kid,
        "key_arn": record.key_arn,
        "public_key": record.public_key,
        "state": record.state.value,
        "created_at": format_instant(record.created_at),
        "changed_at": format_instant(record.changed_at),
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
        keys = tuple(_record(value) for value in get_list(item, "keys"))
        return KeyRegistry(generation=get_n(item, "generation"), keys=keys)

    def put_registry(self, registry: KeyRegistry, expected_generation: int) -> None:
        item = to_item(
            {
                "cluster_id": REGISTRY_ID,
                "kind": KIND,
                "generation": registry.generation,
                "keys": [_value(k) for k in registry.keys],
            }
        )
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(cluster_id)"}
        if expected_generation:
            condition = {
                "ConditionExpression": "generation = :read",
                "ExpressionAttributeValues": expression_values({":read": expected_generation}),
            }
        try:
            with translated(STORE):
                self._client.put_item(TableName=self._table, Item=item, **condition)
        except ConditionFailed:
            raise Conflict(
                "the signing keys changed meanwhile: list them again and retry"
            ) from None
