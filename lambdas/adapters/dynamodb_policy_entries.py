"""Per-cluster policy entries on the policy_entries table (``cluster_id``,
``entry_key``).

One item per device entry (``entry_key`` = ``seg_contract.entry_key(user, device_id)``)
and per user credential (``entry_key`` = ``<US>cred<US><user>``: no device key starts
with the unit separator, since a device entry's user is never empty).
``body`` holds the contract model as JSON; a few fields are copied out for the console.
Items are written only by a version's commit (``dynamodb_policy_log``, which builds them
with ``device_item`` / ``credential_item``), each a compare-and-swap on the version it
replaces; every read here is consistent."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    Item,
    batch_get,
    get_s,
    paged,
    s,
    to_item,
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


def device_item(cluster_id: str, entry: DeviceEntry) -> Item:
    item: Item = to_item(
        {
            "cluster_id": cluster_id,
            "entry_key": entry.key,
            "kind": DEVICE,
            "version": entry.version,
            "body": entry.model_dump_json(),
            "user": entry.user,
            "device_id": entry.device_id,
            "access": entry.access.value,
            "source": entry.source.value,
            "updated_at": format_instant(entry.updated_at),
        }
    )
    if entry.mdm_device_id:
        item["mdm_device_id"] = s(entry.mdm_device_id)
    return item


def credential_item(cluster_id: str, credential: UserCredential) -> Item:
    return to_item(
        {
            "cluster_id": cluster_id,
            "entry_key": credential_key(credential.user),
            "kind": CREDENTIAL,
            "version": credential.version,
            "body": credential.model_dump_json(),
            "user": credential.user,
            "updated_at": format_instant(credential.updated_at),
        }
    )


class DynamoDbPolicyEntries:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

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

    def get_many(
        self, cluster_id: str, device_keys: Collection[str], users: Collection[str]
    ) -> tuple[dict[str, DeviceEntry], dict[str, UserCredential]]:
        keys = sorted({*device_keys, *(credential_key(u) for u in users)})
        items = batch_get(
            self._client,
            self._table,
            [{"cluster_id": s(cluster_id), "entry_key": s(k)} for k in keys],
            STORE,
        )
        devices, credentials = _split(items)
        return {d.key: d for d in devices}, {c.user: c for c in credentials}

    def list_all(self, cluster_id: str) -> tuple[list[DeviceEntry], list[UserCredential]]:
        return _split(
            paged(
                self._client,
                "query",
                STORE,
                TableName=self._table,
                KeyConditionExpression="cluster_id = :c",
                ExpressionAttributeValues={":c": s(cluster_id)},
                ConsistentRead=True,
            )
        )
