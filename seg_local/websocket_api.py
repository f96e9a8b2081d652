"""Plays API Gateway's WebSocket API: the three routes and the ``@connections`` API.

- ``GET /{stage}`` upgrades to a WebSocket. Before accepting, the ``$connect`` function
  is invoked with API Gateway's event shape; any status but 200 refuses the upgrade with
  that status (an exception is a 500, as API Gateway answers an integration failure).
- Every message invokes ``$default``; a ``body`` in the function's response is sent
  back (a two-way route).
- When the socket closes, from either side or because a limit was hit, ``$disconnect``
  is invoked once, with the close code and a reason.
- ``POST /{stage}/@connections/{id}`` sends the body as one frame,
  ``GET`` describes the connection, ``DELETE`` closes it; an unknown id answers 410 with
  ``x-amzn-ErrorType: GoneException``, which boto3's ``apigatewaymanagementapi`` client
  raises as ``GoneException``.

API Gateway's limits are enforced (Amazon API Gateway quotas for WebSocket APIs):
connections last at most 2 hours, are closed after 10 minutes without traffic, and a
message may be at most 128 KB. Tests pass shorter limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from seg_local.aws_events import (
    LambdaContext,
    WebSocketApi,
    ws_connect_event,
    ws_disconnect_event,
    ws_message_event,
)

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

# The spelling API Gateway passes on is the client's; ASGI lower-cases header names, so
# the headers the product uses get their conventional spelling back. Handlers should
# still look headers up case-insensitively (clients differ).
_HEADER_SPELLING = {
    "authorization": "Authorization",
    "x-seg-node-id": "X-SEG-Node-Id",
    "host": "Host",
    "user-agent": "User-Agent",
    "origin": "Origin",
    "sec-websocket-key": "Sec-WebSocket-Key",
    "sec-websocket-version": "Sec-WebSocket-Version",
    "sec-websocket-extensions": "Sec-WebSocket-Extensions",
    "sec-websocket-protocol": "Sec-WebSocket-Protocol",
    "x-forwarded-for": "X-Forwarded-For",
    "x-forwarded-port": "X-Forwarded-Port",
    "x-forwarded-proto": "X-Forwarded-Proto",
}
_HOP_BY_HOP = {"connection", "upgrade"}


@dataclass(frozen=True)
class Limits:
    max_connection_s: float = 2 * 3600.0
    idle_timeout_s: float = 600.0
    max_message_bytes: int = 128 * 1024


@dataclass(frozen=True)
class Routes:
    connect: Handler
    disconnect: Handler
    default: Handler
    connect_name: str = "ws_connect"
    disconnect_name: str = "ws_disconnect"
    default_name: str = "ws_default"


@dataclass
class _Connection:
    connection_id: str
    websocket: WebSocket
    connected_at: datetime
    source_ip: str
    user_agent: str
    last_active: float  # loop time, for the idle limit
    last_active_at: datetime  # wall clock, for GET @connections
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    close_code: int | None = None
    close_reason: str = ""
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def new_connection_id() -> str:
    # API Gateway ids look like "L0SM9cOFvHcCIhw=": 15 characters and a pad.
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(15)) + "="


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _gone() -> Response:
    return JSONResponse(
        {"message": None}, status_code=410, headers={"x-amzn-ErrorType": "GoneException"}
    )


class WebSocketApiStandIn:
    """The ASGI app (``.app``) plus the registry of open connections."""

    def __init__(
        self,
        routes: Routes,
        *,
        stage: str = "local",
        api_id: str = "localws",
        limits: Limits | None = None,
    ) -> None:
        self.routes = routes
        self.stage = stage
        self.api_id = api_id
        self.limits = limits or Limits()
        self.domain_name = "127.0.0.1"
        self.connections: dict[str, _Connection] = {}
        self.app = Starlette(
            routes=[
                WebSocketRoute(f"/{stage}", self._websocket),
                Route(
                    f"/{stage}/@connections/{{connection_id}}",
                    self._management,
                    methods=["GET", "POST", "DELETE"],
                ),
            ]
        )

    @property
    def api(self) -> WebSocketApi:
        return WebSocketApi(api_id=self.api_id, domain_name=self.domain_name, stage=self.stage)

    def management_endpoint(self, scheme: str = "http") -> str:
        """What boto3's ``apigatewaymanagementapi`` client takes as ``endpoint_url``."""
        return f"{scheme}://{self.domain_name}/{self.stage}"

    async def _invoke(self, handler: Handler, name: str, event: dict[str, Any]) -> Any:
        return await asyncio.to_thread(handler, event, LambdaContext(name, timeout_s=29))

    # --- the WebSocket route --------------------------------------------------------

    async def _websocket(self, websocket: WebSocket) -> None:
        connection_id = new_connection_id()
        headers = {
            _HEADER_SPELLING.get(k, k.title()): v
            for k, v in websocket.headers.items()
            if k not in _HOP_BY_HOP
        }
        source_ip = websocket.client.host if websocket.client else "127.0.0.1"
        user_agent = headers.get("User-Agent", "")
        now = datetime.now(UTC)
        event = ws_connect_event(
            self.api,
            connection_id=connection_id,
            headers=headers,
            query=dict(websocket.query_params),
            source_ip=source_ip,
            now=now,
        )
        try:
            result = await self._invoke(self.routes.connect, self.routes.connect_name, event)
        except Exception:
            log.exception("$connect raised")
            await websocket.send_denial_response(
                JSONResponse({"message": "Internal server error"}, status_code=500)
            )
            return
        status = int(result.get("statusCode", 200)) if isinstance(result, dict) else 200
        if status != 200:
            body = result.get("body") or "" if isinstance(result, dict) else ""
            # The route's headers travel with the refusal, as API Gateway passes them
            # (e.g. the control plane's mark on a rejected gateway credential).
            refusal_headers = result.get("headers") if isinstance(result, dict) else None
            await websocket.send_denial_response(
                Response(
                    str(body),
                    status_code=status,
                    media_type="application/json",
                    headers=dict(refusal_headers) if isinstance(refusal_headers, dict) else None,
                )
            )
            return
        await websocket.accept()
        loop = asyncio.get_running_loop()
        conn = _Connection(
            connection_id=connection_id,
            websocket=websocket,
            connected_at=now,
            source_ip=source_ip,
            user_agent=user_agent,
            last_active=loop.time(),
            last_active_at=now,
        )
        self.connections[connection_id] = conn
        try:
            await self._serve(conn)
        finally:
            self.connections.pop(connection_id, None)
            conn.closed.set()
            await self._disconnected(conn)

    async def _serve(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        receiving: asyncio.Task[Any] | None = None
        try:
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(conn.websocket.receive())
                deadline = min(
                    opened + self.limits.max_connection_s,
                    conn.last_active + self.limits.idle_timeout_s,
                )
                done, _ = await asyncio.wait({receiving}, timeout=max(0.0, deadline - loop.time()))
                if not done:
                    if loop.time() >= opened + self.limits.max_connection_s:
                        await self._close(conn, 1001, "Going away (maximum connection duration)")
                    elif loop.time() >= conn.last_active + self.limits.idle_timeout_s:
                        await self._close(conn, 1001, "Going away (idle timeout)")
                    continue  # a push kept it alive; the receive is still pending
                message = receiving.result()
                receiving = None
                if message["type"] == "websocket.disconnect":
                    if conn.close_code is None:
                        conn.close_code = int(message.get("code", 1005))
                        conn.close_reason = (
                            f"Client-side close frame status code '{conn.close_code}' "
                            f"and reason '{message.get('reason') or ''}'"
                        )
                    return
                text = message.get("text")
                data = text if text is not None else (message.get("bytes") or b"")
                size = len(data.encode() if isinstance(data, str) else data)
                conn.last_active, conn.last_active_at = loop.time(), datetime.now(UTC)
                if size > self.limits.max_message_bytes:
                    await self._close(conn, 1009, "Message too big")
                    continue
                body = data if isinstance(data, str) else data.decode("utf-8", "replace")
                await self._message(conn, body)
        finally:
            if receiving is not None and not receiving.done():
                receiving.cancel()

    async def _message(self, conn: _Connection, body: str) -> None:
        event = ws_message_event(
            self.api,
            connection_id=conn.connection_id,
            body=body,
            connected_at=conn.connected_at,
            source_ip=conn.source_ip,
            user_agent=conn.user_agent,
            now=datetime.now(UTC),
        )
        try:
            result = await self._invoke(self.routes.default, self.routes.default_name, event)
        except Exception:
            log.exception("$default raised")
            await self._send(conn, json.dumps({"message": "Internal server error"}))
            return
        if isinstance(result, dict) and result.get("body") is not None:
            await self._send(conn, str(result["body"]))

    async def _disconnected(self, conn: _Connection) -> None:
        event = ws_disconnect_event(
            self.api,
            connection_id=conn.connection_id,
            connected_at=conn.connected_at,
            source_ip=conn.source_ip,
            user_agent=conn.user_agent,
            status_code=conn.close_code if conn.close_code is not None else 1006,
            reason=conn.close_reason,
            now=datetime.now(UTC),
        )
        try:
            await self._invoke(self.routes.disconnect, self.routes.disconnect_name, event)
        except Exception:
            log.exception("$disconnect raised")

    async def _send(self, conn: _Connection, data: str | bytes) -> bool:
        async with conn.send_lock:
            if conn.close_code is not None:
                return False
            try:
                if isinstance(data, str):
                    await conn.websocket.send_text(data)
                else:
                    await conn.websocket.send_bytes(data)
            except Exception:  # the peer went away between lookup and send
                return False
            conn.last_active = asyncio.get_running_loop().time()
            conn.last_active_at = datetime.now(UTC)
            return True

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        async with conn.send_lock:
            if conn.close_code is not None:
                return
            conn.close_code, conn.close_reason = code, reason
            try:
                await conn.websocket.close(code=code, reason=reason[:120])
            except Exception:
                log.debug("close of %s failed (already closed)", conn.connection_id)

    async def close_all(self, code: int = 1001, reason: str = "Going away") -> None:
        for conn in list(self.connections.values()):
            await self._close(conn, code, reason)
        for conn in list(self.connections.values()):
            try:
                await asyncio.wait_for(conn.closed.wait(), 5)
            except TimeoutError:
                log.warning("connection %s did not close in time", conn.connection_id)

    # --- the @connections management API ---------------------------------------------

    async def _management(self, request: Request) -> Response:
        conn = self.connections.get(request.path_params["connection_id"])
        if conn is None or conn.close_code is not None:
            return _gone()
        if request.method == "GET":
            return JSONResponse(
                {
                    # The wire names of GetConnection's output (camelCase, rest-json).
                    "connectedAt": _iso(conn.connected_at),
                    "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                    "lastActiveAt": _iso(conn.last_active_at),
                }
            )
        if request.method == "DELETE":
            await self._close(conn, 1000, "Connection deleted through the @connections API")
            return Response(status_code=204)
        data = await request.body()
        if len(data) > self.limits.max_message_bytes:
            return JSONResponse(
                {"message": "Request entity too large"},
                status_code=413,
                headers={"x-amzn-ErrorType": "PayloadTooLargeException"},
            )
        try:
            payload: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            payload = data
        if not await self._send(conn, payload):
            return _gone()
        return Response(status_code=200)
