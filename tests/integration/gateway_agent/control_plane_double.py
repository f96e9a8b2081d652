"""A test double of the control plane's gateway endpoints (API.md "Gateways" and the
WebSocket API), on 127.0.0.1 with aiohttp: enough behaviour to drive the node agent
through every path, and a record of what the node sent.

It holds one cluster's policy as a list of versioned changes, so snapshots, deltas and
pushes agree with each other exactly as the real control plane's do.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from seg_contract import (
    Access,
    AccessEventBatch,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushPong,
    PushRevoked,
)

CLUSTER = "c-test"
CREDENTIAL = "segc_c-test_k1_secretsecret"


def entry(user: str, device_id: str, access: Access, version: int, reason: str = "") -> DeviceEntry:
    return DeviceEntry(
        user=user,
        device_id=device_id,
        access=access,
        reason=reason or f"{access.value} by test",
        source=EntrySource.COMPLIANCE,
        version=version,
        updated_at=datetime.now(UTC),
    )


@dataclass
class ControlPlaneDouble:
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    entries: dict[tuple[str, str], DeviceEntry] = field(default_factory=dict)
    version: int = 0
    revoked: bool = False
    events_status: int = 202
    delta_gone: bool = False
    answer_keepalives: bool = True
    # What the node did.
    requests: list[str] = field(default_factory=list)
    delta_calls: list[int] = field(default_factory=list)
    batches: list[AccessEventBatch] = field(default_factory=list)
    keepalives: list[dict[str, Any]] = field(default_factory=list)
    ws_connects: int = 0
    ws_headers: list[dict[str, str]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    # --- the policy ----------------------------------------------------------------------

    def set_entry(self, user: str, device_id: str, access: Access) -> DeviceEntry:
        """Change an entry at the next version (without pushing it)."""
        self.version += 1
        e = entry(user, device_id, access, self.version)
        self.entries[(user, device_id)] = e
        return e

    def snapshot(self) -> PolicySnapshot:
        return PolicySnapshot(
            cluster_id=CLUSTER,
            version=self.version,
            generated_at=datetime.now(UTC),
            settings=self.settings,
            devices=tuple(self.entries.values()),
        )

    def delta(self, since: int) -> PolicyDelta:
        return PolicyDelta(
            cluster_id=CLUSTER,
            since_version=since,
            version=self.version,
            generated_at=datetime.now(UTC),
            devices=tuple(e for e in self.entries.values() if e.version > since),
        )

    @property
    def events(self) -> list[str]:
        return [e.event_id for b in self.batches for e in b.events]

    # --- pushes --------------------------------------------------------------------------

    async def push(self, message: Any) -> None:
        text = message.model_dump_json() if hasattr(message, "model_dump_json") else message
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(text)

    async def push_entry(self, e: DeviceEntry) -> None:
        await self.push(PushChange(cluster_id=CLUSTER, version=e.version, devices=(e,)))

    async def revoke(self) -> None:
        self.revoked = True
        await self.push(PushRevoked(cluster_id=CLUSTER))

    # --- HTTP ----------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        return (
            not self.revoked
            and request.headers.get("Authorization") == f"Bearer {CREDENTIAL}"
            and bool(request.headers.get("X-SEG-Node-Id"))
        )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if not self._authorised(request):
            return web.json_response({"detail": "bad credential"}, status=401)
        return await handler(request)

    async def _policy(self, request: web.Request) -> web.Response:
        etag = f'"{CLUSTER}-{self.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=self.snapshot().model_dump_json(),
            content_type="application/json",
            headers={"ETag": etag},
        )

    async def _delta(self, request: web.Request) -> web.Response:
        since = int(request.query["since"])
        self.delta_calls.append(since)
        if self.delta_gone:
            return web.json_response({"detail": "gone"}, status=410)
        return web.Response(
            body=self.delta(since).model_dump_json(), content_type="application/json"
        )

    async def _events(self, request: web.Request) -> web.Response:
        if self.events_status != 202:
            return web.json_response({"detail": "unavailable"}, status=self.events_status)
        batch = AccessEventBatch.model_validate_json(await request.read())
        self.batches.append(batch)
        return web.json_response({"accepted": len(batch.events)}, status=202)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.ws_headers.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connects += 1
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.keepalives.append(data)
                if not self.answer_keepalives:
                    continue
                pong = PushPong(
                    cluster_id=CLUSTER, version=self.version, server_time=datetime.now(UTC)
                )
                await ws.send_str(pong.model_dump_json())
        self.sockets.remove(ws)
        return ws

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/gateway/v1/policy", self._policy)
        app.router.add_get("/gateway/v1/policy/delta", self._delta)
        app.router.add_post("/gateway/v1/access-events", self._events)
        app.router.add_get("/ws", self._ws)
        # A short shutdown: open keep-alive or WebSocket connections must not hold a
        # test's teardown for aiohttp's default minute.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


async def eventually(predicate: Any, timeout: float = 5.0, what: str = "") -> None:
    """Wait until ``predicate()`` is true (polling every 20 ms)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not predicate():
        if loop.time() > until:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)
