"""The compliance FIFO queue (SQS): one message per device change to evaluate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsComplianceQueue:
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self._url = queue_url
        self._client: SQSClient = client or boto3.client("sqs")

    def send(self, body: str, group_id: str, dedup_id: str) -> None:
        try:
            self._client.send_message(
                QueueUrl=self._url,
                MessageBody=body,
                MessageGroupId=group_id,
                MessageDeduplicationId=dedup_id,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("compliance queue unavailable") from exc
