"""No secret the control plane hands out or receives (a cluster credential ``segc_...``,
a device password PW1, an upstream password PW2) reaches a trace, a log line or a
metric.

The real Lambda handlers run with their Powertools Tracer switched to a provider that
records every annotation and metadata value (what X-Ray would store), at DEBUG level,
with every log line and every metric document (EMF on stdout) captured."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from lambdas.handlers import api, ws_connect, ws_default
from seg_contract import GatewayKeepalive
from seg_contract.crypto import generate_cluster_keypair
from tests.integration.control_api.conftest import ADMIN_TOKEN, http_event
from tests.support.aws import AwsEnv
from tests.support.events import LambdaContext, ws_connect_event, ws_message_event

HANDLERS = (api, ws_connect, ws_default)


class RecordingSegment(BaseSegment):
    def __init__(self, sink: list[tuple[str, Any]]) -> None:
        self.sink = sink

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        self.sink.append((f"annotation {key}", value))

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.sink.append((f"metadata {namespace}/{key}", value))

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        self.sink.append(("exception", exception))


class RecordingProvider(BaseProvider):
    """Everything a handler would have sent to X-Ray."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, Any]] = []

    @contextlib.contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment]:
        self.recorded.append(("subsegment", name))
        yield RecordingSegment(self.recorded)

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any):  # type: ignore[override]
        yield RecordingSegment(self.recorded)

    def put_annotation(self, key: str, value: Any) -> None:
        self.recorded.append((f"annotation {key}", value))

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.recorded.append((f"metadata {namespace}/{key}", value))

    def patch(self, modules: Any) -> None:
        pass

    def patch_all(self) -> None:
        pass

    def text(self) -> str:
        return "\n".join(f"{k}: {v!r}" for k, v in self.recorded)


@pytest.fixture
def provider(env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProvider]:
    recording = RecordingProvider()
    for module in HANDLERS:
        monkeypatch.setattr(module.function.tracer, "provider", recording)
        monkeypatch.setattr(module.function.tracer, "disabled", False)
        module.function.logger.setLevel(logging.DEBUG)
    api.function.root.cache_clear()
    ws_connect.function.root.cache_clear()
    ws_default.function.root.cache_clear()
    yield recording
    for module in HANDLERS:
        module.function.logger.setLevel(logging.INFO)
    api.function.root.cache_clear()
    ws_connect.function.root.cache_clear()
    ws_default.function.root.cache_clear()


def _call(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = api.handler(event, LambdaContext())
    assert response["statusCode"] < 300, response
    return response


def _admin(method: str, path: str, body: Any = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = _call(http_event(method, path, headers=headers, body=body))
    return json.loads(response["body"]) if response.get("body") else {}


def test_issued_credentials_and_passwords_never_reach_traces_logs_or_metrics(
    provider: RecordingProvider,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, public_key = generate_cluster_keypair()
    created = _admin("POST", "/console/v1/clusters", {"name": "hq", "public_key": public_key})
    cluster_id, credential = created["cluster_id"], created["credential"]
    rotated = _admin("POST", f"/console/v1/clusters/{cluster_id}/credentials/rotate")["credential"]
    upstream_password = "Upstream-PW2-" + "s3cr3t" * 4
    _call(
        http_event(
            "PUT",
            f"/console/v1/clusters/{cluster_id}/substitution/alice",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            body={"upstream_password": upstream_password},
        )
    )
    device_password = _admin(
        "POST",
        f"/console/v1/clusters/{cluster_id}/substitution/alice/device-password",
        {"device_id": "ApplF17XK0ABCDE"},
    )["device_password"]

    # The credentials presented back by a gateway: HTTP, then the WebSocket routes.
    gateway = {"Authorization": f"Bearer {rotated}", "X-SEG-Node-Id": "node-1"}
    _call(http_event("GET", "/gateway/v1/policy", headers=gateway))
    forged = credential[: credential.rindex("_") + 1] + "F" * 43
    refused = api.handler(
        http_event("GET", "/gateway/v1/policy", headers={"Authorization": f"Bearer {forged}"}),
        LambdaContext(),
    )
    assert refused["statusCode"] == 401
    connect = ws_connect_event(
        "conn-1", {"Authorization": f"Bearer {credential}"}, {"node_id": "n1"}
    )
    assert ws_connect.handler(connect, LambdaContext())["statusCode"] == 200
    refused_ws = ws_connect_event(
        "conn-2", {"Authorization": f"Bearer {forged}"}, {"node_id": "n2"}
    )
    assert ws_connect.handler(refused_ws, LambdaContext())["statusCode"] == 401
    keepalive = GatewayKeepalive(node_id="n1", policy_version=0, policy_age_s=0, spool_depth=0)
    message = ws_message_event("conn-1", keepalive.model_dump_json())
    assert ws_default.handler(message, LambdaContext())["statusCode"] == 200

    out, err = capfd.readouterr()
    logs = "\n".join(
        r.getMessage() + " " + json.dumps(r.__dict__, default=str) for r in caplog.records
    )
    traces = provider.text()
    # The harness sees what it must: every handler's subsegment, log lines and metrics.
    assert "## handler" in traces and "annotation ColdStart" in traces
    assert '"message":"request"' in out.replace(" ", "") or "request" in logs
    assert '"_aws"' in out  # the EMF metric documents
    for secret in (credential, rotated, device_password, upstream_password, forged, ADMIN_TOKEN):
        for where, text in (("trace", traces), ("stdout", out), ("stderr", err), ("log", logs)):
            assert secret not in text, f"a secret reached the {where}"


def test_the_recorder_would_see_a_captured_response(provider: RecordingProvider) -> None:
    """The control: with capture on (Powertools' default), the response would be trace
    metadata, so the test above can fail."""

    @api.function.tracer.capture_lambda_handler(capture_response=True)
    def leaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"credential": "segc_canary"}

    leaky({}, LambdaContext())
    assert "segc_canary" in provider.text()
