"""Fixtures of the control-plane API tests: moto resources, the app on moto clients,
the callers' credentials, and event builders (API Gateway HTTP API v2, SQS)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lambdas import resources
from lambdas.api.app import create_app
from lambdas.api.deps import Container
from lambdas.settings import load_settings
from tests.support.aws import AwsEnv, aws  # noqa: F401  (fixture)
from tests.support.events import sqs_event_from_messages

MDM_KEY = "mdm-key-" + "k" * 32
ADMIN_TOKEN = "admin-token-" + "t" * 32
OPERATOR_TOKEN = "operator-token-" + "o" * 32
VIEWER_TOKEN = "viewer-token-" + "v" * 32


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Ctx:
    aws: AwsEnv
    client: TestClient

    @staticmethod
    def mdm() -> dict[str, str]:
        return {"Authorization": f"Bearer {MDM_KEY}"}

    @staticmethod
    def admin() -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    @staticmethod
    def operator() -> dict[str, str]:
        return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    @staticmethod
    def viewer() -> dict[str, str]:
        return {"Authorization": f"Bearer {VIEWER_TOKEN}"}

    @staticmethod
    def gw(credential: str, node: str = "node-1") -> dict[str, str]:
        return {"Authorization": f"Bearer {credential}", "X-SEG-Node-Id": node}


@pytest.fixture
def env(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:  # noqa: F811
    """The moto resources, described in os.environ as a deployed function sees them."""
    monkeypatch.setenv(resources.ENV_CONSOLE_AUTH, "static")
    monkeypatch.setenv(resources.ENV_CONSOLE_TOKEN_SHA256, sha(ADMIN_TOKEN))
    monkeypatch.setenv(resources.ENV_CONSOLE_OPERATOR_TOKEN_SHA256, sha(OPERATOR_TOKEN))
    monkeypatch.setenv(resources.ENV_CONSOLE_VIEWER_TOKEN_SHA256, sha(VIEWER_TOKEN))
    monkeypatch.setenv(resources.ENV_DEVICE_SERVICES_KEY_SHA256, sha(MDM_KEY))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "SEG")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")
    aws.env.update(
        {
            resources.ENV_CONSOLE_AUTH: "static",
            resources.ENV_CONSOLE_TOKEN_SHA256: sha(ADMIN_TOKEN),
            resources.ENV_CONSOLE_OPERATOR_TOKEN_SHA256: sha(OPERATOR_TOKEN),
            resources.ENV_CONSOLE_VIEWER_TOKEN_SHA256: sha(VIEWER_TOKEN),
            resources.ENV_DEVICE_SERVICES_KEY_SHA256: sha(MDM_KEY),
        }
    )
    load_settings.cache_clear()
    yield aws
    load_settings.cache_clear()


@pytest.fixture
def ctx(env: AwsEnv) -> Iterator[Ctx]:
    container = Container(
        env.settings,
        dynamodb=env.dynamodb,
        sqs=env.sqs,
        apigw=env.apigw,
        kms=env.kms,
        roster_refresh_s=0,
    )
    app = create_app(container=container)
    with TestClient(app) as client:
        yield Ctx(env, client)


def sqs_event(env: AwsEnv, queue_id: str, max_messages: int = 10) -> dict[str, Any]:
    """Receive what is on a queue and shape it as the SQS event Lambda would deliver."""
    url = env.queues[queue_id]
    received = env.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=max_messages, AttributeNames=["All"]
    ).get("Messages", [])
    return sqs_event_from_messages(received, queue_arn(env, queue_id))


def queue_arn(env: AwsEnv, queue_id: str) -> str:
    return str(
        env.sqs.get_queue_attributes(QueueUrl=env.queues[queue_id], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    )


def http_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    query: str = "",
    jwt_claims: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as Lambda receives it."""
    text = json.dumps(body) if body is not None and not isinstance(body, str) else body
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    if text is not None:
        lowered.setdefault("content-type", "application/json")
    context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": "api-test",
        "domainName": "api-test.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "api-test",
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "192.0.2.10",
            "userAgent": "test",
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": "27/Nov/2026:02:30:00 +0000",
        "timeEpoch": 1795746600000,
    }
    if jwt_claims is not None:
        context["authorizer"] = {"jwt": {"claims": jwt_claims, "scopes": None}}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": context,
        "body": text,
        "isBase64Encoded": False,
    }


def register(ctx: Ctx, name: str = "hq", public_key: str | None = None) -> tuple[str, str]:
    """Register a cluster through the console API; return (cluster_id, credential)."""
    body: dict[str, Any] = {"name": name}
    if public_key is not None:
        body["public_key"] = public_key
    response = ctx.client.post("/console/v1/clusters", json=body, headers=ctx.admin())
    assert response.status_code == 201, response.text
    created = response.json()
    return created["cluster_id"], created["credential"]


def enrollment(mdm_id: str = "mdm-1", user: str = "alice", eas: str = "DEV1") -> dict[str, Any]:
    return {
        "type": "enrollment",
        "event_id": f"enr-{mdm_id}-{uuid.uuid4().hex[:8]}",
        "occurred_at": "2026-11-27T01:00:00Z",
        "mdm_device_id": mdm_id,
        "user": user,
        "eas_device_ids": [eas],
        "platform": "iOS",
        "model": "iPhone 15",
        "os_version": "18.1",
        "managed": True,
    }
