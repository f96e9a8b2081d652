"""Plain-text e-mail through Amazon SES (API v2), from an identity the deployment
verified (``SEG_NOTICE_SENDER``). Locally moto plays SES."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError


class SesMailer:
    def __init__(self, client: Any = None) -> None:
        self._client = client or boto3.client("sesv2")

    def send(self, *, sender: str, to: str, subject: str, body: str) -> str:
        try:
            response = self._client.send_email(
                FromEmailAddress=sender,
                Destination={"ToAddresses": [to]},
                Content={
                    "Simple": {
                        "Subject": {"Data": subject, "Charset": "UTF-8"},
                        "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
                    }
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"SES refused the notice: {exc}") from exc
        return str(response.get("MessageId", ""))
