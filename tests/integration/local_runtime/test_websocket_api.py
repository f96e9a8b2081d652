"""The API Gateway WebSocket stand-in: route events, refusal, two-way replies, the
@connections management API (GoneException) and API Gateway's limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import pytest
import websockets
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import Runtime


def _url(rt: Runtime) -> str:
    assert rt.cp.endpoints is not None
    return rt.cp.endpoints.ws_url + "?node_id=n1"


def _mgmt(rt: Runtime) -> Any:
    assert rt.cp.endpoints is not None
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=rt.cp.endpoints.management_endpoint,
        region_name="us-east-1",
    )


GOOD = {"Authorization": "Bearer good", "X-SEG-Node-Id": "n1"}


def _connection_id(rt: Runtime, before: int) -> str:
    events = rt.rec.wait_for("connect", lambda ev: len(ev) > before)
    return str(events[-1]["requestContext"]["connectionId"])


async def test_connect_event_shape_and_two_way_default_route(runtime: Runtime) -> None:
    before = len(runtime.rec.events.get("connect", []))
    async with websockets.connect(_url(runtime), additional_headers=GOOD) as ws:
        connection_id = _connection_id(runtime, before)
        await ws.send("hello")
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"echo": "hello"}
    connect = runtime.rec.events["connect"][-1]
    parsed = APIGatewayWebSocketConnectEventModel.model_validate(connect)
    assert parsed.request_context.route_key == "$connect"
    assert parsed.request_context.event_type == "CONNECT"
    assert connect["headers"]["Authorization"] == "Bearer good"
    assert connect["headers"]["X-SEG-Node-Id"] == "n1"
    assert connect["queryStringParameters"] == {"node_id": "n1"}
    message = next(
        e
        for e in runtime.rec.events["default"]
        if e["requestContext"]["connectionId"] == connection_id
    )
    parsed_message = APIGatewayWebSocketMessageEventModel.model_validate(message)
    assert parsed_message.request_context.route_key == "$default"
    assert message["body"] == "hello"
    events = runtime.rec.wait_for(
        "disconnect",
        lambda ev: any(e["requestContext"]["connectionId"] == connection_id for e in ev),
    )
    gone = next(e for e in events if e["requestContext"]["connectionId"] == connection_id)
    parsed_gone = APIGatewayWebSocketDisconnectEventModel.model_validate(gone)
    assert parsed_gone.request_context.disconnect_status_code == 1000


async def test_connect_refused_with_the_handlers_status(runtime: Runtime) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            _url(runtime), additional_headers={"Authorization": "Bearer bad"}
        ):
            pass
    assert info.value.response.status_code == 401


async def test_management_api_posts_gets_and_deletes(runtime: Runtime) -> None:
    mgmt = _mgmt(runtime)
    before = len(runtime.rec.events.get("connect", []))
    async with websockets.connect(_url(runtime), additional_headers=GOOD) as ws:
        connection_id = _connection_id(runtime, before)
        await asyncio.to_thread(
            mgmt.post_to_connection, ConnectionId=connection_id, Data=b'{"type":"pong"}'
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        info = await asyncio.to_thread(mgmt.get_connection, ConnectionId=connection_id)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        await asyncio.to_thread(mgmt.delete_connection, ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    with pytest.raises(mgmt.exceptions.GoneException):
        await asyncio.to_thread(mgmt.post_to_connection, ConnectionId=connection_id, Data=b"late")


def test_unknown_connection_is_gone(runtime: Runtime) -> None:
    mgmt = _mgmt(runtime)
    with pytest.raises(mgmt.exceptions.GoneException):
        mgmt.post_to_connection(ConnectionId="NoSuchConnecti=", Data=b"x")
    with pytest.raises(mgmt.exceptions.GoneException):
        mgmt.get_connection(ConnectionId="NoSuchConnecti=")


async def test_oversize_message_closes_with_1009(runtime: Runtime) -> None:
    async with websockets.connect(_url(runtime), additional_headers=GOOD) as ws:
        await ws.send("x" * 5000)  # the fixture's limit is 4096 bytes
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_idle_connection_is_closed_and_disconnect_runs(runtime: Runtime) -> None:
    before = len(runtime.rec.events.get("connect", []))
    async with websockets.connect(_url(runtime), additional_headers=GOOD) as ws:
        connection_id = _connection_id(runtime, before)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)  # the fixture's idle limit is 3 s
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    events = runtime.rec.wait_for(
        "disconnect",
        lambda ev: any(e["requestContext"]["connectionId"] == connection_id for e in ev),
    )
    gone = next(e for e in events if e["requestContext"]["connectionId"] == connection_id)
    assert "idle" in gone["requestContext"]["disconnectReason"]
