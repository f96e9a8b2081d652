"""The admin port: a deliberately small HTTP/1.1 server for GET requests (health probes,
Prometheus scrapes, diagnostics), on its own port and, by default, on 127.0.0.1 only.

One request per connection (``Connection: close``): probes and scrapers do not need
keep-alive, and it keeps this server trivially correct. Request heads are bounded
(8 KiB) and must arrive within 10 s. Routing is a dict of path -> async handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: object) -> Response:
        return cls(status, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")


Handler = Callable[[Mapping[str, str]], Awaitable[Response]]


class AdminServer:
    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self._routes = dict(routes)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("admin port on %s:%d", host, bound)
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await self._respond(reader)
            reason = HTTPStatus(response.status).phrase
            head = (
                f"HTTP/1.1 {response.status} {reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + response.body)
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> Response:  # noqa: PLR0911
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return Response.json(431, {"detail": "request head too large"})
        except asyncio.IncompleteReadError:
            return Response.json(400, {"detail": "incomplete request"})
        if len(head) > MAX_HEAD_BYTES:
            return Response.json(431, {"detail": "request head too large"})
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return Response.json(400, {"detail": "malformed request line"})
        if method != "GET":
            return Response.json(405, {"detail": "only GET is served here"})
        url = urlsplit(target)
        handler = self._routes.get(url.path)
        if handler is None:
            return Response.json(404, {"detail": f"no such route: {url.path}"})
        try:
            query = dict(parse_qsl(url.query, keep_blank_values=True, max_num_fields=20))
        except ValueError:
            return Response.json(400, {"detail": "too many query parameters"})
        try:
            return await handler(query)
        except Exception:
            log.exception("admin handler for %s failed", url.path)
            return Response.json(500, {"detail": "internal error (see the node's log)"})
