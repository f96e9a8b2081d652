"""Fixtures for the EAS proxy on 127.0.0.1 with real TLS on both legs: a throwaway CA-less
self-signed certificate per leg, a small aiohttp EAS upstream that records what it saw,
an in-memory PolicyView / EventSink, and a gateway started in-process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy import ProxySettings, Timeouts, Upstream, start_eas_server
from onprem_gateway.proxy.server import EasServer
from seg_contract import (
    Access,
    AccessEvent,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicySnapshot,
    UserCredential,
)
from tests.support.certs import server_cert

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
# Basic alice:pw: who the mail server authenticates, so who the gateway decides on.
ALICE = "Basic YWxpY2U6cHc="


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every test here runs on asyncio's loop and on uvloop: the node runs the proxy on
    uvloop, whose TLS and transports are its own code, not asyncio's."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


BLOCK_SIZE = 64 * 1024


def pattern_block(seed: int) -> bytes:
    """64 KiB of deterministic, non-repeating-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < BLOCK_SIZE:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:BLOCK_SIZE])


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body_size: int
    body_sha256: str


@dataclass
class FakeUpstream:
    """A stand-in EAS server. ``hold_s`` delays the answers to ``hold_commands``; requests with
    ``X-Test-Respond-Bytes: N`` get N pattern bytes back (streamed); with
    ``X-Test-Hold-After-Head`` the answer starts and then waits (``release``)."""

    seen: list[Seen] = field(default_factory=list)
    hold_s: float = 0.0
    hold_commands: tuple[str, ...] = ("Ping", "FolderSync")
    # Set once the upstream has received this many request-body bytes (streaming proof).
    got_bytes_event: asyncio.Event = field(default_factory=asyncio.Event)
    got_bytes_threshold: int = 2 * 1024 * 1024
    # The upstream waits for this before sending the rest of a large response.
    client_got_first: asyncio.Event | None = None
    port: int = 0
    cert: Path | None = None
    # Set at teardown: held requests end at once instead of holding up the cleanup.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(256 * 1024):
            digest.update(chunk)
            size += len(chunk)
            if size >= self.got_bytes_threshold:
                self.got_bytes_event.set()
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
                size,
                digest.hexdigest(),
            )
        )
        cmd = request.query.get("Cmd", "")
        if request.headers.get("X-Test-Hold-After-Head"):
            # An answer that has started (head and a first chunk) and then waits.
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/vnd.ms-sync.wbxml"
            await resp.prepare(request)
            await resp.write(b"partial")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hold_s or 30)
            await resp.write_eof()
            return resp
        if cmd in self.hold_commands and self.hold_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hold_s)
        if request.headers.get("X-Test-451"):
            return web.Response(
                status=451,
                headers={
                    "X-MS-Location": "https://mail01.corp.internal/Microsoft-Server-ActiveSync"
                },
            )
        respond = int(request.headers.get("X-Test-Respond-Bytes", "0"))
        if respond:
            resp = web.StreamResponse(status=200)
            resp.content_length = respond
            resp.content_type = "application/vnd.ms-sync.wbxml"
            await resp.prepare(request)
            block = pattern_block(2)
            sent = 0
            while sent < respond:
                piece = block[: min(BLOCK_SIZE, respond - sent)]
                await resp.write(piece)
                sent += len(piece)
                if self.client_got_first is not None and sent == 4 * 1024 * 1024:
                    await asyncio.wait_for(self.client_got_first.wait(), 20)
            await resp.write_eof()
            return resp
        return web.Response(
            status=200,
            body=f"ok {size} {digest.hexdigest()}".encode(),
            headers={"X-Upstream": "yes", "Connection-Specific": "x"},
            content_type="application/vnd.ms-sync.wbxml",
        )


class MemoryPolicy:
    def __init__(self, index: PolicyIndex) -> None:
        self.index = index

    def current(self) -> PolicyIndex:
        return self.index


class MemorySink:
    def __init__(self) -> None:
        self.events: list[AccessEvent] = []

    def record(self, event: AccessEvent) -> None:
        self.events.append(event)


def entry(user: str, device_id: str, access: Access, version: int = 1) -> DeviceEntry:
    return DeviceEntry(
        user=user,
        device_id=device_id,
        access=access,
        reason=f"test {access}",
        source=EntrySource.COMPLIANCE,
        version=version,
        updated_at=NOW,
    )


def policy_index(
    devices: tuple[DeviceEntry, ...] = (),
    credentials: tuple[UserCredential, ...] = (),
    **settings: Any,
) -> PolicyIndex:
    snap = PolicySnapshot(
        cluster_id="c1",
        version=10,
        generated_at=NOW,
        settings=ClusterSettings(**settings),
        devices=devices,
        credentials=credentials,
    )
    return PolicyIndex.from_snapshot(snap, confirmed_at=time.time())


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("certs")
    return {"gateway": server_cert(tmp, "gateway"), "upstream": server_cert(tmp, "upstream")}


async def serve_tls(
    handler: Callable[[web.Request], Any], cert: tuple[Path, Path], **runner_options: Any
) -> tuple[web.AppRunner, int]:
    """An aiohttp server on 127.0.0.1 (ephemeral port, TLS with ``cert``) that hands every
    request to ``handler``; the caller cleans the runner up."""
    app = web.Application(client_max_size=200 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, cert))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def upstream(certs: dict[str, tuple[Path, Path]]) -> AsyncIterator[FakeUpstream]:
    up = FakeUpstream()
    runner, up.port = await serve_tls(up.handle, certs["upstream"])
    up.cert = certs["upstream"][0]
    yield up
    up.release.set()
    await runner.cleanup()


@dataclass
class Gateway:
    server: EasServer
    policy: MemoryPolicy
    sink: MemorySink
    client_ssl: ssl.SSLContext

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    @property
    def port(self) -> int:
        return self.server.port


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def make_gateway(
    certs: dict[str, tuple[Path, Path]],
) -> AsyncIterator[GatewayFactory]:
    started: list[EasServer] = []

    async def make(
        upstream_port: int,
        index: PolicyIndex | None = None,
        timeouts: Timeouts | None = None,
        **overrides: Any,
    ) -> Gateway:
        settings = ProxySettings(
            upstream=Upstream(
                url=f"https://127.0.0.1:{upstream_port}",
                ca_bundle=certs["upstream"][0],
                server_hostname="localhost",
            ),
            public_url="https://seg.example.com",
            tls_cert=certs["gateway"][0],
            tls_key=certs["gateway"][1],
            node_id="node-1",
            timeouts=timeouts or Timeouts(upstream_connect_s=2.0),
        )
        if overrides:
            settings = replace(settings, **overrides)
        policy = MemoryPolicy(index or policy_index())
        sink = MemorySink()
        server = await start_eas_server(settings, policy, sink)
        started.append(server)
        client_ssl = ssl.create_default_context(cafile=str(certs["gateway"][0]))
        return Gateway(server, policy, sink, client_ssl)

    yield make
    for server in started:
        await server.close(0.5)
