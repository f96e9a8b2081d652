"""The Lambda entry point (``lambdas.handlers.api.handler``) with real API Gateway HTTP
API v2 events, including the JWT-authorizer console mode; and the OpenAPI export."""

from __future__ import annotations

import base64
import gzip
import json

import boto3
import pytest

from lambdas import resources
from lambdas.api import openapi
from lambdas.handlers import api
from lambdas.settings import load_settings
from tests.integration.control_api.conftest import (
    ADMIN_TOKEN,
    MDM_KEY,
    Ctx,
    enrollment,
    http_event,
    register,
)
from tests.support.aws import AwsEnv
from tests.support.events import LambdaContext


@pytest.fixture
def invoke(env: AwsEnv):
    api.function.root.cache_clear()
    yield lambda event: api.handler(event, LambdaContext())
    api.function.root.cache_clear()


def test_health_through_api_gateway(invoke) -> None:
    response = invoke(http_event("GET", "/health"))
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok"}


def test_mdm_event_through_api_gateway(invoke, env: AwsEnv) -> None:
    event = enrollment()
    headers = {"Authorization": f"Bearer {MDM_KEY}"}
    response = invoke(http_event("POST", "/mdm/v1/events", headers=headers, body=event))
    assert response["statusCode"] == 202
    assert json.loads(response["body"]) == {"event_id": event["event_id"], "status": "queued"}
    malformed = invoke(http_event("POST", "/mdm/v1/events", headers=headers, body="{oops"))
    assert malformed["statusCode"] == 422
    assert json.loads(malformed["body"])["detail"]


def test_gateway_policy_through_api_gateway_with_etag(invoke, ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    headers = {"Authorization": f"Bearer {credential}", "Accept-Encoding": "gzip"}
    first = invoke(http_event("GET", "/gateway/v1/policy", headers=headers))
    assert first["statusCode"] == 200
    etag = first["headers"]["etag"]
    assert json.loads(first["body"])["cluster_id"] == cluster_id
    cached = invoke(
        http_event("GET", "/gateway/v1/policy", headers={**headers, "If-None-Match": etag})
    )
    assert cached["statusCode"] == 304
    delta = invoke(http_event("GET", "/gateway/v1/policy/delta", headers=headers, query="since=5"))
    assert delta["statusCode"] == 410


def test_large_answers_are_gzipped_for_lambdas_payload_limit(invoke, ctx: Ctx) -> None:
    headers = {"Authorization": "Bearer " + "x", "Accept-Encoding": "gzip"}
    response = invoke(http_event("GET", "/openapi.json", headers=headers))
    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is True
    assert response["headers"]["content-encoding"] == "gzip"
    document = json.loads(gzip.decompress(base64.b64decode(response["body"])))
    assert "/gateway/v1/policy" in document["paths"]


def test_console_in_jwt_mode_reads_the_authorizers_claims(
    invoke, env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(resources.ENV_CONSOLE_AUTH, "jwt")
    load_settings.cache_clear()
    claims = {
        "sub": "1234-abcd",
        "email": "admin@example.com",
        "token_use": "access",
        # How API Gateway's JWT authorizer hands an array claim to the function.
        "cognito:groups": "[viewer admin]",
    }
    ok = invoke(http_event("GET", "/console/v1/whoami", jwt_claims=claims))
    assert ok["statusCode"] == 200
    body = json.loads(ok["body"])
    assert (body["subject"], body["role"]) == ("admin@example.com", "admin")
    viewer = {**claims, "email": "v@example.com", "cognito:groups": "[viewer]"}
    refused = invoke(
        http_event("POST", "/console/v1/clusters", jwt_claims=viewer, body={"name": "x"})
    )
    assert refused["statusCode"] == 403
    assert "needs the admin role" in json.loads(refused["body"])["detail"]
    # A pool member in no console group has no role at all.
    nobody = {**claims, "cognito:groups": "[staff]"}
    refused = invoke(http_event("GET", "/console/v1/whoami", jwt_claims=nobody))
    assert refused["statusCode"] == 403
    assert "no console group" in json.loads(refused["body"])["detail"]
    # Without the authorizer's context (e.g. a route left unprotected) nobody gets in,
    # whatever bearer token is presented.
    spoofed = invoke(
        http_event("GET", "/console/v1/whoami", headers={"Authorization": "Bearer anything"})
    )
    assert spoofed["statusCode"] == 401
    assert json.loads(spoofed["body"])["detail"].startswith("no validated console identity")


def test_openapi_export_is_up_to_date() -> None:
    assert openapi.is_current(), "run: python -m lambdas.api.openapi"
    document = json.loads(openapi.OPENAPI_FILE.read_text())
    assert {"/mdm/v1/events", "/gateway/v1/policy", "/console/v1/email-devices"} <= set(
        document["paths"]
    )


def test_device_services_key_from_secrets_manager(
    invoke, env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="seg-mdm-key", SecretString="from-the-vault-123")["ARN"]
    monkeypatch.delenv(resources.ENV_DEVICE_SERVICES_KEY_SHA256)
    monkeypatch.setenv(resources.ENV_DEVICE_SERVICES_SECRET_ARN, arn)
    load_settings.cache_clear()
    event = enrollment()
    good = {"Authorization": "Bearer from-the-vault-123"}
    ok = invoke(http_event("POST", "/mdm/v1/events", headers=good, body=event))
    assert ok["statusCode"] == 202
    old = invoke(
        http_event(
            "POST", "/mdm/v1/events", headers={"Authorization": f"Bearer {MDM_KEY}"}, body=event
        )
    )
    assert old["statusCode"] == 401


def test_console_does_not_depend_on_an_unreadable_device_services_secret(
    invoke, env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only Device Services calls read the MDM key's secret: when it cannot be read, the
    console and the gateways keep working and the MDM gets a clear 503."""
    monkeypatch.delenv(resources.ENV_DEVICE_SERVICES_KEY_SHA256)
    monkeypatch.setenv(
        resources.ENV_DEVICE_SERVICES_SECRET_ARN,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf",
    )
    load_settings.cache_clear()
    whoami = invoke(
        http_event("GET", "/console/v1/whoami", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    )
    assert whoami["statusCode"] == 200
    mdm = invoke(
        http_event(
            "POST",
            "/mdm/v1/events",
            headers={"Authorization": "Bearer anything"},
            body=enrollment(),
        )
    )
    assert mdm["statusCode"] == 503
    assert "detail" in json.loads(mdm["body"])
