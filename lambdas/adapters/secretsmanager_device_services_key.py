"""The Device Services (MDM) bearer key, kept in Secrets Manager in AWS.

The API only ever needs the key's sha256 (it compares digests in constant time), so the
secret is read once per container and only its digest is kept in memory; it is re-read
after ``ttl_s`` so a rotated key takes effect without a redeploy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class SecretsManagerKeyDigest:
    def __init__(
        self,
        secret_arn: str,
        client: SecretsManagerClient | None = None,
        ttl_s: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._arn = secret_arn
        self._client = client
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._digest = ""
        self._read_at = 0.0

    def sha256(self) -> str:
        now = self._monotonic()
        if not self._digest or now - self._read_at > self._ttl_s:
            client = self._client or boto3.client("secretsmanager")
            try:
                value = client.get_secret_value(SecretId=self._arn)["SecretString"]
            except (ClientError, BotoCoreError, KeyError) as exc:
                raise StorageError("Device Services key unavailable") from exc
            self._digest = hashlib.sha256(value.strip().encode("utf-8")).hexdigest()
            self._read_at = now
        return self._digest
