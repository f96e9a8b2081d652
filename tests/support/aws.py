"""moto fixture: every table and queue of ``lambdas.resources``, created in-process.

Use: ``from tests.support.aws import aws  # noqa: F401`` in a conftest, then take the
``aws`` fixture; ``aws.settings`` is a ``lambdas.settings.Settings`` for these resources
and ``aws.env`` the environment variables that describe them.

The stack's policy signing key is an ECC_NIST_P256 key in moto's KMS, as the CDK app
creates one: every function that emits policy signs with it, and ``posted`` verifies
each message a connection received with its public key, as a gateway would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core import DEFAULT_ACCOUNT_ID

from lambdas import resources
from lambdas.settings import Settings, load_settings, parse_settings
from seg_contract.signing import (
    Applied,
    Kind,
    SignedMessage,
    SignedPayload,
    TrustedKey,
    Verified,
    Verifier,
)

REGION = "us-east-1"
PREFIX = "seg-test-"


@dataclass
class AwsEnv:
    dynamodb: Any
    sqs: Any
    apigw: Any
    env: dict[str, str]
    tables: dict[str, str]  # table id -> name
    queues: dict[str, str]  # queue id -> URL
    dlqs: dict[str, str] = field(default_factory=dict)  # queue id -> DLQ URL
    kms: Any = None
    signing_key_arn: str = ""
    signing_key: TrustedKey | None = None  # its public key, as nodes pin it

    @property
    def settings(self) -> Settings:
        return parse_settings(self.env)

    def verifier(self) -> Verifier:
        assert self.signing_key is not None
        return Verifier([self.signing_key])

    def verify(self, signed: SignedPayload, cluster_id: str, kind: Kind) -> Verified:
        """Verify as a node that holds nothing yet would (``SignatureRejected``)."""
        return self.verifier().verify(
            signed,
            cluster_id=cluster_id,
            kinds=kind,
            applied=Applied(),
            now_ms=signed.statement().issued_at_ms,
        )

    def posted_raw(self, connection_id: str) -> list[dict[str, Any]]:
        """Every JSON message posted to a connection through the management API, in
        order (moto concatenates the posted bytes; each push is one JSON object)."""
        backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID][REGION]
        connection = backend.connections.get(connection_id)
        if connection is None:
            return []
        text = connection.data.decode("utf-8")
        decoder = json.JSONDecoder()
        messages: list[dict[str, Any]] = []
        index = 0
        while index < len(text):
            message, index = decoder.raw_decode(text, index)
            messages.append(message)
        return messages

    def posted(self, connection_id: str) -> list[dict[str, Any]]:
        """The pushes a connection received, in order: each one a ``signed`` envelope
        that must verify with the stack's key (for the cluster and kind its payload
        names), unwrapped to the push itself."""
        return [self.unwrap(raw) for raw in self.posted_raw(connection_id)]

    def unwrap(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The push in a ``signed`` envelope, verified with the stack's key."""
        signed = SignedPayload.from_envelope(SignedMessage.model_validate(raw))
        push = json.loads(signed.payload)
        verified = self.verify(signed, push["cluster_id"], Kind(push["type"]))
        message: dict[str, Any] = json.loads(verified.payload)
        return message

    def receive_all(self, queue_id: str, *, dlq: bool = False) -> list[dict[str, Any]]:
        """Receive (and leave in flight) every message visible on a queue or its DLQ."""
        url = self.dlqs[queue_id] if dlq else self.queues[queue_id]
        found: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)


def _create_table(client: Any, table: resources.Table) -> str:
    name = PREFIX + table.id
    keys = [table.partition] + ([table.sort] if table.sort else [])
    attrs = {k.name: k.type.value for k in keys}
    indexes = []
    for index in table.indexes:
        schema = [{"AttributeName": index.partition.name, "KeyType": "HASH"}]
        attrs[index.partition.name] = index.partition.type.value
        if index.sort:
            schema.append({"AttributeName": index.sort.name, "KeyType": "RANGE"})
            attrs[index.sort.name] = index.sort.type.value
        indexes.append(
            {"IndexName": index.name, "KeySchema": schema, "Projection": {"ProjectionType": "ALL"}}
        )
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": table.partition.name, "KeyType": "HASH"}]
        + ([{"AttributeName": table.sort.name, "KeyType": "RANGE"}] if table.sort else []),
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": t} for n, t in sorted(attrs.items())
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        kwargs["GlobalSecondaryIndexes"] = indexes
    client.create_table(**kwargs)
    if table.ttl_attribute:
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
        )
    return name


def _create_queue(client: Any, queue: resources.Queue) -> tuple[str, str]:
    suffix = ".fifo" if queue.fifo else ""
    fifo = {"FifoQueue": "true"} if queue.fifo else {}
    dlq_url = client.create_queue(QueueName=f"{PREFIX}{queue.id}-dlq{suffix}", Attributes=fifo)[
        "QueueUrl"
    ]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    attributes = {
        **fifo,
        "VisibilityTimeout": str(queue.visibility_timeout_s),
        "RedrivePolicy": (
            f'{{"deadLetterTargetArn": "{dlq_arn}", '
            f'"maxReceiveCount": "{queue.max_receive_count}"}}'
        ),
    }
    url = client.create_queue(QueueName=f"{PREFIX}{queue.id}{suffix}", Attributes=attributes)[
        "QueueUrl"
    ]
    return url, dlq_url


def create_all(dynamodb: Any, sqs: Any) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    tables = {t.id: _create_table(dynamodb, t) for t in resources.TABLES}
    queues: dict[str, str] = {}
    dlqs: dict[str, str] = {}
    for queue in resources.QUEUES:
        queues[queue.id], dlqs[queue.id] = _create_queue(sqs, queue)
    return tables, queues, dlqs


def create_signing_key(kms: Any) -> tuple[str, TrustedKey]:
    """A policy signing key as ``cdk/signing.py`` creates one: its ARN and public key."""
    arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    return str(arn), TrustedKey.from_der(kms.get_public_key(KeyId=arn)["PublicKey"])


def environment(tables: dict[str, str], queues: dict[str, str]) -> dict[str, str]:
    env = {resources.table(t).env: name for t, name in tables.items()}
    env.update({resources.queue(q).env: url for q, url in queues.items()})
    env[resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT] = (
        f"https://ws-test.execute-api.{REGION}.amazonaws.com/test"
    )
    return env


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:
    """Every table and queue in moto; the environment variables that name them are set
    (and ``load_settings`` re-read), so handlers' composition roots find them."""
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        kms = boto3.client("kms", region_name=REGION)
        tables, queues, dlqs = create_all(dynamodb, sqs)
        env = environment(tables, queues)
        key_arn, public = create_signing_key(kms)
        env[resources.ENV_POLICY_SIGNING_KEY_ARNS] = key_arn
        apigw = boto3.client(
            "apigatewaymanagementapi",
            region_name=REGION,
            endpoint_url=env[resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT],
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        load_settings.cache_clear()
        yield AwsEnv(dynamodb, sqs, apigw, env, tables, queues, dlqs, kms, key_arn, public)
    load_settings.cache_clear()
