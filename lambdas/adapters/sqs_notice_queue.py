"""The notices queue (standard SQS): one message per device change to notify."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsNoticeQueue:
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self._url = queue_url
        self._client: SQSClient = client or boto3.client("sqs")

    def send(self, body: str) -> None:
        try:
            self._client.send_message(QueueUrl=self._url, MessageBody=body)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("notice queue unavailable") from exc
