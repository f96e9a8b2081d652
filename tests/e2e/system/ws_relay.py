"""A WebSocket relay on 127.0.0.1 between one gateway node and the control plane's
WebSocket endpoint: a man in the middle who terminates the node's connection, opens its
own to the control plane with the node's credential and node id, and forwards every
frame both ways. With ``tamper`` on, it changes one byte of each signed ``change`` push
on its way to the node (an access turned around), as a TLS-inspecting proxy could."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

FORWARDED_HEADERS = ("Authorization", "X-SEG-Node-Id")


def tamper_frame(frame: str) -> str:
    """A ``signed`` envelope of a ``change`` push with its payload altered after signing
    (every other frame unchanged)."""
    try:
        envelope = json.loads(frame)
    except ValueError:
        return frame
    payload = envelope.get("payload") if isinstance(envelope, dict) else None
    if envelope.get("type") != "signed" or not isinstance(payload, str):
        return frame
    if '"type":"change"' not in payload:
        return frame
    for old, new in (('"block"', '"allow"'), ('"allow"', '"block"')):
        if old in payload:
            envelope["payload"] = payload.replace(old, new, 1)
            return json.dumps(envelope)
    return frame


class WebSocketRelay:
    def __init__(self, target: Callable[[], str]) -> None:
        self._target = target  # the control plane's ws URL, read at each connection
        self.tamper = False
        self.tampered = 0  # frames altered so far
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | None = None

    def start(self) -> int:
        self._thread.start()

        async def start() -> Server:
            return await serve(self._relay, "127.0.0.1", 0, max_size=None)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self.port

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _relay(self, node: ServerConnection) -> None:
        request = node.request
        assert request is not None
        target = self._target().rstrip("/")
        query = request.path.partition("?")[2]
        url = target + ("?" + query if query else "")
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        try:
            async with connect(url, additional_headers=headers, max_size=None) as upstream:
                await asyncio.gather(self._to_node(upstream, node), self._to_cloud(node, upstream))
        except (OSError, ConnectionClosed) as exc:
            with contextlib.suppress(Exception):
                await node.close(1011, type(exc).__name__)

    async def _to_node(self, upstream: ClientConnection, node: ServerConnection) -> None:
        try:
            async for frame in upstream:
                text = frame if isinstance(frame, str) else frame.decode()
                if self.tamper:
                    altered = tamper_frame(text)
                    if altered != text:
                        self.tampered += 1
                    text = altered
                await node.send(text)
        finally:
            await node.close()

    async def _to_cloud(self, node: ServerConnection, upstream: ClientConnection) -> None:
        try:
            async for frame in node:
                await upstream.send(frame)
        finally:
            await upstream.close()
