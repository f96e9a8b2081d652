"""The gateway's upstream leg: TLS verification, plain HTTP when configured, the pool."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from onprem_gateway.proxy import ProxySettings, Timeouts, Upstream, start_eas_server
from seg_contract import Access
from tests.integration.gateway_proxy.conftest import (
    ALICE,
    FakeUpstream,
    GatewayFactory,
    MemoryPolicy,
    MemorySink,
    entry,
    policy_index,
)

SYNC = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=DEV1&DeviceType=iPhone"
HEADERS = {"MS-ASProtocolVersion": "14.1", "Authorization": ALICE}


def allowed() -> object:
    return policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))


async def test_upstream_with_an_untrusted_certificate_is_refused_with_503(
    upstream: FakeUpstream,
    make_gateway: GatewayFactory,
    certs: dict[str, tuple[Path, Path]],
) -> None:
    gw = await make_gateway(upstream.port, allowed())
    # Trust the wrong CA: the gateway must not talk to an upstream it cannot verify.
    bad = dataclasses.replace(gw.server.state.settings.upstream, ca_bundle=certs["gateway"][0])
    gw2 = await make_gateway(upstream.port, allowed(), upstream=bad)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            gw2.url + SYNC, data=b"x", headers=HEADERS, ssl=gw2.client_ssl
        ) as r:
            assert r.status == 503
        async with session.post(gw.url + SYNC, data=b"x", headers=HEADERS, ssl=gw.client_ssl) as r:
            assert r.status == 200
    assert gw2.server.metrics.upstream_errors == {"tls": 1}
    assert len(upstream.seen) == 1


@pytest.fixture
async def plain_upstream() -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"plain " + request.headers["X-Forwarded-Proto"].encode())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def test_plain_http_on_both_legs_when_configured_and_idle_pool_expiry(
    plain_upstream: int,
) -> None:
    settings = ProxySettings(
        upstream=Upstream(url=f"http://127.0.0.1:{plain_upstream}", allow_plain_http=True),
        public_url="http://seg.example.com",
        timeouts=Timeouts(upstream_pool_idle_s=0.2),
    )
    server = await start_eas_server(settings, MemoryPolicy(allowed()), MemorySink())  # type: ignore[arg-type]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}{SYNC}"
            async with session.post(url, data=b"x", headers=HEADERS) as r:
                assert r.status == 200
                assert await r.read() == b"plain http"
        assert server.metrics.upstream_idle == 1  # kept for the next request
        for _ in range(100):
            if server.metrics.upstream_idle == 0:
                break
            await asyncio.sleep(0.05)
        assert server.metrics.upstream_idle == 0  # expired by the sweeper
    finally:
        await server.close(0.5)


class _ClosesSecondRequest(asyncio.Protocol):
    """An upstream that answers the first request on a connection and drops the
    connection, unanswered, when a second one arrives (a keep-alive race)."""

    requests: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.count += 1
            self.requests.append(length)
            if self.count == 1:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[attr-defined]
            else:
                self.transport.close()
                return


async def test_request_on_a_pooled_connection_the_upstream_dropped_is_retried_once() -> None:
    loop = asyncio.get_running_loop()
    _ClosesSecondRequest.requests = []
    up = await loop.create_server(_ClosesSecondRequest, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    settings = ProxySettings(
        upstream=Upstream(url=f"http://127.0.0.1:{up_port}", allow_plain_http=True),
        public_url="http://seg.example.com",
    )
    server = await start_eas_server(settings, MemoryPolicy(allowed()), MemorySink())  # type: ignore[arg-type]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}{SYNC}"
            for body in (b"one", b"two"):
                async with session.post(url, data=body, headers=HEADERS) as r:
                    assert r.status == 200
            # A body too large to keep a copy of cannot be replayed: 502, not a hang.
            async with session.post(url, data=b"x" * 100_000, headers=HEADERS) as r:
                assert r.status == 502
        # one, two (dropped on the reused connection), two again on a new connection,
        # then the large one dropped on the reused connection.
        assert _ClosesSecondRequest.requests == [3, 3, 3, 100_000]
    finally:
        await server.close(0.5)
        up.close()
