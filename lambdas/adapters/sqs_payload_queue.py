"""The payload queue (standard SQS) that carries access-event batches to the reader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsPayloadQueue:
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        self._url = queue_url
        self._client: SQSClient = client or boto3.client("sqs")

    def send(self, bodies: Sequence[str]) -> None:
        # One message per call: each body may be close to the 256 KiB limit, which is
        # also the limit of a whole SendMessageBatch request.
        try:
            for body in bodies:
                self._client.send_message(QueueUrl=self._url, MessageBody=body)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError("payload queue unavailable") from exc
