"""Per-cluster policy entries on the policy_entries table (``cluster_id``,
``entry_key``), with the ``by_version`` index (``cluster_id``, ``version``) for deltas.

One item per device entry (``entry_key`` = ``seg_contract.entry_key(user, device_id)``)
and per user credential (``entry_key`` = ``<US>cred<US><user>``: no device key starts
with the unit separator, since a device entry's user is never empty).
``body`` holds the contract model as JSON; a few fields are copied out for the console.
Every write is conditional on a greater version than the stored one (newest wins)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    get_s,
    n,
    paged,
    s,
    translated,
)
from lambdas.domain.timefmt import format_instant
from seg_contract import DeviceEntry, UserCredential, entry_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "policy entry store"
DEVICE = "device"
CREDENTIAL = "credential"
CREDENTIAL_PREFIX = "\x1fcred\x1f"


def credential_key(user: str) -> str:
    return CREDENTIAL_PREFIX + user


def _split(items: Any) -> tuple[list[DeviceEntry], list[UserCredential]]:
    devices: list[DeviceEntry] = []
    credentials: list[UserCredential] = []
    for item in items:
        kind = get_s(item, "kind")
        if kind == DEVICE:
            devices.append(DeviceEntry.model_validate_json(get_s(item, "body")))
        elif kind == CREDENTIAL:
            credentials.append(UserCredential.model_validate_json(get_s(item, "body")))
    return devices, credentials


class DynamoDbPolicyEntries:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def _put_newer(self, item: Item, version: int) -> bool:
        try:
            with translated(STORE):
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(entry_key) OR version < :v",
                    ExpressionAttributeValues={":v": n(version)},
                )
        except ConditionFailed:
            return False
        return True

    def put_device_entry(self, cluster_id: str, entry: DeviceEntry) -> bool:
        item: Item = {
            "cluster_id": s(cluster_id),
            "entry_key": s(entry.key),
            "kind": s(DEVICE),
            "version": n(entry.version),
            "body": s(entry.model_dump_json()),
            "user": s(entry.user),
            "device_id": s(entry.device_id),
            "access": s(entry.access.value),
            "source": s(entry.source.value),
            "updated_at": s(format_instant(entry.updated_at)),
        }
        if entry.mdm_device_id:
            item["mdm_device_id"] = s(entry.mdm_device_id)
        return self._put_newer(item, entry.version)

    def put_credential(self, cluster_id: str, credential: UserCredential) -> bool:
        item: Item = {
            "cluster_id": s(cluster_id),
            "entry_key": s(credential_key(credential.user)),
            "kind": s(CREDENTIAL),
            "version": n(credential.version),
            "body": s(credential.model_dump_json()),
            "user": s(credential.user),
            "updated_at": s(format_instant(credential.updated_at)),
        }
        return self._put_newer(item, credential.version)

    def _get(self, cluster_id: str, key: str) -> Item | None:
        with translated(STORE):
            response = self._client.get_item(
                TableName=self._table,
                Key={"cluster_id": s(cluster_id), "entry_key": s(key)},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return dict(item) if item else None

    def get_device_entry(self, cluster_id: str, user: str, device_id: str) -> DeviceEntry | None:
        item = self._get(cluster_id, entry_key(user, device_id))
        if item is None or get_s(item, "kind") != DEVICE:
            return None
        return DeviceEntry.model_validate_json(get_s(item, "body"))

    def get_credential(self, cluster_id: str, user: str) -> UserCredential | None:
        item = self._get(cluster_id, credential_key(user))
        if item is None or get_s(item, "kind") != CREDENTIAL:
            return None
        return UserCredential.model_validate_json(get_s(item, "body"))

    def list_all(self, cluster_id: str) -> tuple[list[DeviceEntry], list[UserCredential]]:
        return _split(
            paged(
                self._client.query,
                STORE,
                TableName=self._table,
                KeyConditionExpression="cluster_id = :c",
                ExpressionAttributeValues={":c": s(cluster_id)},
                ConsistentRead=True,
            )
        )

    def list_since(
        self, cluster_id: str, since_version: int
    ) -> tuple[list[DeviceEntry], list[UserCredential]]:
        return _split(
            paged(
                self._client.query,
                STORE,
                TableName=self._table,
                IndexName="by_version",
                KeyConditionExpression="cluster_id = :c AND version > :v",
                ExpressionAttributeValues={":c": s(cluster_id), ":v": n(since_version)},
            )
        )
