"""Bearer token issuers in the cluster settings: the control plane fetches each issuer's
JWK Set from its ``jwks_uri`` (a local HTTPS server here) when settings are saved and on
its schedule, so the public keys travel to the nodes in the policy."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lambdas.adapters.http_jwks import HttpJwks
from lambdas.api.app import create_app
from lambdas.api.deps import Container, jwks_source
from lambdas.domain.errors import JwksUnavailable
from lambdas.usecases.token_issuers import refresh_issuer_keys
from seg_contract import PolicySnapshot
from tests.integration.control_api.conftest import Ctx, register
from tests.support.aws import AwsEnv
from tests.support.certs import server_cert
from tests.support.tokens import AUDIENCE, ISSUER, Issuer

NOW = datetime(2026, 11, 27, tzinfo=UTC)


class JwksServer:
    """Serves ``documents[path]`` as JSON over HTTPS (or the status / raw bytes given)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.documents: dict[str, Any] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = server.documents.get(self.path)
                if isinstance(found, int):
                    self.send_response(found)
                    self.end_headers()
                    return
                body = found if isinstance(found, bytes) else json.dumps(found).encode()
                self.send_response(200 if found is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://localhost:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[tuple[JwksServer, HttpJwks]]:
    cert, key = server_cert(tmp_path, "jwks")
    server = JwksServer(cert, key)
    trusting = HttpJwks(ssl_context=ssl.create_default_context(cafile=str(cert)))
    yield server, trusting
    server.close()


@pytest.fixture
def api(env: AwsEnv, jwks_server: tuple[JwksServer, HttpJwks]) -> Iterator[tuple[Ctx, Container]]:
    container = Container(env.settings, dynamodb=env.dynamodb, sqs=env.sqs, apigw=env.apigw)
    app = create_app(container=container)
    app.dependency_overrides[jwks_source] = lambda: jwks_server[1]
    with TestClient(app) as client:
        yield Ctx(env, client), container


def issuer_settings(jwks_uri: str) -> dict[str, Any]:
    return {
        "bearer_issuers": [
            {"issuer": ISSUER, "audiences": [AUDIENCE], "user_claim": "upn", "jwks_uri": jwks_uri}
        ]
    }


def test_saving_settings_fetches_the_issuers_public_keys_into_the_policy(
    api: tuple[Ctx, Container], jwks_server: tuple[JwksServer, HttpJwks]
) -> None:
    ctx, _ = api
    server, _ = jwks_server
    idp = Issuer()
    document = idp.jwks()
    document["keys"].append({"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"})  # not signing
    server.documents["/keys"] = document
    cluster_id, credential = register(ctx)
    saved = ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/settings",
        json=issuer_settings(server.url("/keys")),
        headers=ctx.admin(),
    )
    assert saved.status_code == 200, saved.text
    snapshot = PolicySnapshot.model_validate(
        ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential)).json()
    )
    [issuer] = snapshot.settings.bearer_issuers
    assert [k.kid for k in issuer.keys] == [idp.kid]  # the encryption key is left out
    assert issuer.keys[0].model_dump(exclude_defaults=True) == idp.jwk()
    assert issuer.keys_fetched_at is not None


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (404, "cannot fetch"),
        (b"<html>", "did not answer JSON"),
        ({"keys": []}, "no signing key"),
        ({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "private!"}]}, "private"),
        ({"no": "keys"}, "not a JWK Set"),
    ],
)
def test_unusable_key_sets_refuse_the_save_with_a_reason(
    api: tuple[Ctx, Container],
    jwks_server: tuple[JwksServer, HttpJwks],
    served: object,
    reason: str,
) -> None:
    ctx, _ = api
    server, _ = jwks_server
    server.documents["/keys"] = served
    cluster_id, _ = register(ctx)
    saved = ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/settings",
        json=issuer_settings(server.url("/keys")),
        headers=ctx.admin(),
    )
    assert saved.status_code == 422 and reason in saved.json()["detail"]
    assert "private!" not in saved.text


def test_plain_http_jwks_uris_and_issuers_without_keys_are_refused(
    api: tuple[Ctx, Container],
) -> None:
    ctx, _ = api
    cluster_id, _ = register(ctx)
    path = f"/console/v1/clusters/{cluster_id}/settings"
    plain = ctx.client.put(
        path, json=issuer_settings("http://idp.example/keys"), headers=ctx.admin()
    )
    assert plain.status_code == 422 and "https://" in plain.json()["detail"]
    keyless = ctx.client.put(path, json=issuer_settings(""), headers=ctx.admin())
    assert keyless.status_code == 422 and "has no keys" in keyless.json()["detail"]


def test_the_schedule_versions_a_cluster_only_when_its_issuer_rolled_keys(
    api: tuple[Ctx, Container], jwks_server: tuple[JwksServer, HttpJwks]
) -> None:
    ctx, container = api
    server, source = jwks_server
    old, new = Issuer(kid="k-old"), Issuer(kid="k-new")
    server.documents["/keys"] = old.jwks()
    cluster_id, credential = register(ctx)
    ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/settings",
        json=issuer_settings(server.url("/keys")),
        headers=ctx.admin(),
    ).raise_for_status()

    def refresh() -> tuple[list[str], list[str]]:
        report = refresh_issuer_keys(stores=container.versions, source=source, now=NOW)
        return report.changed, report.failed

    def policy() -> PolicySnapshot:
        raw = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential)).json()
        return PolicySnapshot.model_validate(raw)

    version = policy().version
    assert refresh() == ([], [])  # same keys: no new version
    assert policy().version == version
    server.documents["/keys"] = {"keys": [old.jwk(), new.jwk()]}  # the IdP rolls its keys
    assert refresh() == ([cluster_id], [])
    rolled = policy()
    assert rolled.version == version + 1
    assert [k.kid for k in rolled.settings.bearer_issuers[0].keys] == ["k-old", "k-new"]
    server.documents["/keys"] = 503  # the IdP is down: the cluster keeps its keys
    changed, failed = refresh()
    assert changed == [] and len(failed) == 1 and cluster_id in failed[0]
    assert policy().version == rolled.version


def test_the_http_source_refuses_what_is_not_a_trusted_https_json_answer(
    jwks_server: tuple[JwksServer, HttpJwks],
) -> None:
    server, source = jwks_server
    server.documents["/keys"] = {"keys": []}
    assert source.fetch(server.url("/keys")) == {"keys": []}
    untrusting = HttpJwks()  # the system trust store does not know the test certificate
    with pytest.raises(JwksUnavailable, match="cannot fetch"):
        untrusting.fetch(server.url("/keys"))
    server.documents["/list"] = [1, 2]
    with pytest.raises(JwksUnavailable):
        source.fetch(server.url("/list"))
