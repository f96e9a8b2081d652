"""Operators' notes on email devices (device_notes table, partition
``email_device_key``): the current text, who wrote it and when. Earlier texts live in
the audit trail (each change is recorded there, before and after)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3

from lambdas.adapters.dynamodb_support import get_s, s, to_item, translated
from lambdas.ports import DeviceNote

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "device notes"


class DynamoDbDeviceNotes:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")

    def get(self, email_device_key: str) -> DeviceNote | None:
        with translated(STORE):
            item = self._client.get_item(
                TableName=self._table,
                Key={"email_device_key": s(email_device_key)},
                ConsistentRead=True,
            ).get("Item")
        if not item:
            return None
        found = dict(item)
        return DeviceNote(
            email_device_key=email_device_key,
            text=get_s(found, "text"),
            author=get_s(found, "author"),
            updated_at=get_s(found, "updated_at"),
        )

    def put(self, note: DeviceNote) -> None:
        key = {"email_device_key": s(note.email_device_key)}
        with translated(STORE):
            if not note.text:
                self._client.delete_item(TableName=self._table, Key=key)
                return
            self._client.put_item(
                TableName=self._table,
                Item={
                    **key,
                    **to_item(
                        {"text": note.text, "author": note.author, "updated_at": note.updated_at}
                    ),
                },
            )
