"""The EAS proxy end to end on 127.0.0.1, real TLS on both legs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from onprem_gateway.proxy import Timeouts
from seg_contract import Access
from tests.integration.gateway_proxy.conftest import (
    BLOCK_SIZE,
    FakeUpstream,
    GatewayFactory,
    entry,
    pattern_block,
    policy_index,
)

EAS = "/Microsoft-Server-ActiveSync"
SYNC = f"{EAS}?Cmd=Sync&User=alice&DeviceId=DEV1&DeviceType=iPhone"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def eas_headers(version: str = "14.1", **extra: str) -> dict[str, str]:
    return {
        "Authorization": basic("alice", "pw"),
        "MS-ASProtocolVersion": version,
        "Content-Type": "application/vnd.ms-sync.wbxml",
        "User-Agent": "Apple-iPhone/1801",
        **extra,
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def allowed() -> dict[str, object]:
    return {"devices": (entry("alice", "dev1", Access.ALLOW),)}


async def test_allowed_sync_is_proxied_with_forwarding_headers_and_recorded(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(upstream.port, policy_index(**allowed()))
    body = b"\x03\x01j\x00E\x5c\x4f\x4b\x03\x31\x00\x01"
    headers = eas_headers(
        Connection="keep-alive, X-Hop",
        **{"X-Hop": "secret", "Keep-Alive": "timeout=5", "TE": "trailers"},
        **{"X-Forwarded-For": "6.6.6.6", "Proxy-Authorization": "Basic eA=="},
    )
    async with session.post(gw.url + SYNC, data=body, headers=headers, ssl=gw.client_ssl) as r:
        assert r.status == 200
        text = await r.read()
        assert r.headers["X-Upstream"] == "yes"
    assert text == f"ok {len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    seen = upstream.seen[-1]
    assert seen.path_qs == SYNC
    for hop in ("x-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in seen.headers
    # The device's own X-Forwarded-For is not believed (127.0.0.1 is not a trusted proxy).
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"
    assert seen.headers["x-forwarded-proto"] == "https"
    assert seen.headers["ms-asprotocolversion"] == "14.1"
    (event,) = gw.sink.events
    assert (event.user, event.device_id, event.command) == ("alice", "dev1", "Sync")
    assert event.decision is Access.ALLOW and event.enforced and event.http_status == 200
    assert event.node_id == "node-1"
    assert gw.server.metrics.snapshot()["requests"] == {"Sync|allow|true": 1}


async def test_trusted_proxy_forwarded_for_is_extended(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(
        upstream.port,
        policy_index(**allowed()),
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    headers = eas_headers(**{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    async with session.post(gw.url + SYNC, data=b"x", headers=headers, ssl=gw.client_ssl) as r:
        assert r.status == 200
    assert upstream.seen[-1].headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


async def test_large_bodies_stream_both_ways_byte_for_byte(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """50 MB up and 50 MB down. Streaming is proven causally, not by timing: the device
    sends the rest of its body only after the upstream received the first 2 MB, and the
    upstream sends the rest of its answer only after the device received the first 4 MB.
    A gateway that buffered either body whole would deadlock (and the test time out)."""
    gw = await make_gateway(upstream.port, policy_index(**allowed()))
    size = 50 * 1024 * 1024
    block = pattern_block(1)
    up_hash = hashlib.sha256()
    upstream.client_got_first = asyncio.Event()

    async def device_body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            up_hash.update(block)
            yield block
            sent += BLOCK_SIZE
            if sent == 4 * 1024 * 1024:
                await asyncio.wait_for(upstream.got_bytes_event.wait(), 20)

    headers = eas_headers(**{"X-Test-Respond-Bytes": str(size)})
    url = gw.url + f"{EAS}?Cmd=SendMail&User=alice&DeviceId=DEV1&DeviceType=iPhone"
    down_hash = hashlib.sha256()
    received = 0
    async with session.post(url, data=device_body(), headers=headers, ssl=gw.client_ssl) as r:
        assert r.status == 200
        async for chunk in r.content.iter_chunked(256 * 1024):
            down_hash.update(chunk)
            received += len(chunk)
            if received >= 4 * 1024 * 1024:
                upstream.client_got_first.set()
    assert received == size
    expected_down = hashlib.sha256()
    for _ in range(size // BLOCK_SIZE):
        expected_down.update(pattern_block(2))
    assert down_hash.hexdigest() == expected_down.hexdigest()
    seen = upstream.seen[-1]
    assert (seen.body_size, seen.body_sha256) == (size, up_hash.hexdigest())
    # The device sent chunked: the gateway re-framed it chunked upstream.
    assert seen.headers.get("transfer-encoding") == "chunked"


async def test_blocked_device_gets_403_for_old_and_129_for_new_protocol(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.BLOCK),))
    )
    async with session.post(
        gw.url + SYNC, data=b"x", headers=eas_headers("12.1"), ssl=gw.client_ssl
    ) as r:
        assert r.status == 403
    async with session.post(
        gw.url + SYNC, data=b"x", headers=eas_headers("14.1"), ssl=gw.client_ssl
    ) as r:
        assert r.status == 200
        body = await r.read()
        assert r.headers["Content-Type"] == "application/vnd.ms-sync.wbxml"
    assert body.startswith(b"\x03\x01j\x00")  # WBXML 1.3, public id 1, UTF-8
    assert upstream.seen == []
    assert [e.http_status for e in gw.sink.events] == [403, 200]
    assert all(e.decision is Access.BLOCK and e.enforced for e in gw.sink.events)


async def test_test_mode_lets_a_blocked_device_through_and_records_it(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    index = policy_index(devices=(entry("alice", "dev1", Access.BLOCK),), test_mode=True)
    gw = await make_gateway(upstream.port, index)
    async with session.post(
        gw.url + SYNC, data=b"x", headers=eas_headers(), ssl=gw.client_ssl
    ) as r:
        assert r.status == 200
        assert (await r.read()).startswith(b"ok 1 ")
    (event,) = gw.sink.events
    assert event.decision is Access.BLOCK and event.enforced is False
    assert len(upstream.seen) == 1


async def test_held_ping_outlives_the_ordinary_idle_timeout(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    """Idle timeout 1 s for ordinary requests, 4 s for long-polls; the upstream holds
    2.5 s. The Ping completes; a FolderSync held as long is cut with 504."""
    timeouts = Timeouts(
        client_keepalive_s=1.0, request_idle_s=1.0, long_poll_idle_s=4.0, upstream_connect_s=2.0
    )
    gw = await make_gateway(upstream.port, policy_index(**allowed()), timeouts=timeouts)
    upstream.hold_s = 2.5
    ping = f"{EAS}?Cmd=Ping&User=alice&DeviceId=DEV1&DeviceType=iPhone"
    folder_sync = f"{EAS}?Cmd=FolderSync&User=alice&DeviceId=DEV1&DeviceType=iPhone"

    async def post(url: str) -> tuple[int, bytes]:
        async with session.post(url, data=b"", headers=eas_headers(), ssl=gw.client_ssl) as r:
            return r.status, await r.read()

    (ping_status, _), (fs_status, fs_body) = await asyncio.gather(
        post(gw.url + ping), post(gw.url + folder_sync)
    )
    assert ping_status == 200
    assert fs_status == 504 and b"did not answer in time" in fs_body
    assert gw.server.metrics.held == 0 and gw.server.metrics.in_flight == 0
    # The Ping's event is recorded when it is forwarded (its answer may take an hour).
    ping_event = next(e for e in gw.sink.events if e.command == "Ping")
    assert ping_event.http_status == 0


async def test_upstream_down_gives_503_with_retry_after(
    make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    gw = await make_gateway(dead_port, policy_index(**allowed()))
    async with session.post(
        gw.url + SYNC, data=b"x", headers=eas_headers(), ssl=gw.client_ssl
    ) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "30"
    assert gw.server.metrics.upstream_errors == {"refused": 1}
    assert gw.sink.events[0].http_status == 503


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (f"{EAS}?Cmd=Sync&Cmd=Sync&DeviceId=a&DeviceType=b", b"more than once"),
        (f"{EAS}?Cmd=Sync&User=alice&DeviceType=iPhone", b"DeviceId"),
        (f"{EAS}?jAAJBAp2MTQw", b"truncated"),
    ],
)
async def test_malformed_eas_request_gets_400_with_reason(
    upstream: FakeUpstream,
    make_gateway: GatewayFactory,
    session: aiohttp.ClientSession,
    target: str,
    reason: bytes,
) -> None:
    gw = await make_gateway(upstream.port)
    async with session.post(
        gw.url + target, data=b"", headers=eas_headers(), ssl=gw.client_ssl
    ) as r:
        assert r.status == 400
        assert reason in await r.read()
    assert upstream.seen == []
    assert gw.sink.events[0].rule == "malformed"


async def test_other_paths_are_404_and_wrong_methods_405(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(upstream.port)
    async with session.get(gw.url + "/owa/", ssl=gw.client_ssl) as r:
        assert r.status == 404
    async with session.get(gw.url + EAS, ssl=gw.client_ssl) as r:
        assert r.status == 405
        assert r.headers["Allow"] == "OPTIONS, POST"
    assert upstream.seen == [] and gw.sink.events == []


async def test_autodiscover_is_decided_by_user_and_forwarded(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(upstream.port)  # empty policy: unknown devices are blocked
    xml = b"<Autodiscover><Request><EMailAddress>alice@example.com</EMailAddress></Request>"
    async with session.post(
        gw.url + "/AutoDiscover/AutoDiscover.xml",
        data=xml,
        headers={"Authorization": basic("alice", "pw")},
        ssl=gw.client_ssl,
    ) as r:
        assert r.status == 200
    assert upstream.seen[-1].path_qs == "/AutoDiscover/AutoDiscover.xml"
    assert upstream.seen[-1].body_size == len(xml)
    (event,) = gw.sink.events
    assert (event.command, event.user, event.rule) == ("Autodiscover", "alice", "autodiscover")


async def test_451_location_is_rewritten_to_the_public_url(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(upstream.port, policy_index(**allowed()))
    headers = eas_headers(**{"X-Test-451": "1"})
    async with session.post(gw.url + SYNC, data=b"x", headers=headers, ssl=gw.client_ssl) as r:
        assert r.status == 451
        assert r.headers["X-MS-Location"] == "https://seg.example.com/Microsoft-Server-ActiveSync"
        assert "internal" not in str(r.headers)


async def test_options_is_proxied(
    upstream: FakeUpstream, make_gateway: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(upstream.port)
    headers = {"Authorization": basic("alice", "pw")}
    async with session.options(gw.url + EAS, headers=headers, ssl=gw.client_ssl) as r:
        assert r.status == 200
    assert upstream.seen[-1].method == "OPTIONS"
    assert gw.sink.events[0].command == "OPTIONS"
