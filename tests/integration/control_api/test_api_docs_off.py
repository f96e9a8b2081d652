"""FastAPI's /docs and /redoc load scripts from a CDN, which the console's CSP must not
allow: they are not served at all; the OpenAPI document stays public."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from lambdas.handlers import api
from tests.integration.control_api.conftest import http_event
from tests.support.aws import AwsEnv
from tests.support.events import LambdaContext


@pytest.fixture
def invoke(env: AwsEnv) -> Iterator[Any]:
    api.function.root.cache_clear()
    yield lambda path: api.handler(http_event("GET", path), LambdaContext())
    api.function.root.cache_clear()


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_interactive_docs_are_not_served(invoke: Any, path: str) -> None:
    response = invoke(path)
    assert response["statusCode"] == 404
    assert "swagger" not in response.get("body", "").lower()
    assert "cdn.jsdelivr.net" not in response.get("body", "")


def test_the_openapi_document_is_still_public(invoke: Any) -> None:
    response = invoke("/openapi.json")
    assert response["statusCode"] == 200
    assert "/gateway/v1/signing-keys" in json.loads(response["body"])["paths"]
