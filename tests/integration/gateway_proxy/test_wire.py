"""HTTP/1.1 wire behaviour at the edge, driven with raw bytes over TLS: pipelining,
100-continue, chunked bodies, limits, malformed HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import random
from itertools import pairwise

from onprem_gateway.proxy.connection import TlsClientConnection
from seg_contract import Access
from tests.integration.gateway_proxy.conftest import (
    ALICE,
    FakeUpstream,
    Gateway,
    GatewayFactory,
    entry,
    policy_index,
)

SYNC = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=DEV1&DeviceType=iPhone"


def request(
    body: bytes = b"x",
    *,
    close: bool = False,
    extra: str = "",
    target: str = SYNC,
    version: str = "14.1",
    authorization: str | None = ALICE,
) -> bytes:
    head = (
        f"POST {target} HTTP/1.1\r\nHost: seg.example.com\r\nMS-ASProtocolVersion: {version}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}"
    )
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def exchange_raw(
    gw: Gateway, data: bytes | list[bytes], read_until_close: bool = True
) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gw.port, ssl=gw.client_ssl, server_hostname="localhost"
    )
    try:
        for piece in data if isinstance(data, list) else [data]:
            writer.write(piece)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    data = request(b"first") + request(b"second!") + request(b"3", close=True)
    out = await exchange_raw(gw, data)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"ok 5 ") < out.index(b"ok 7 ") < out.index(b"ok 1 ")
    assert [s.body_size for s in upstream.seen] == [5, 7, 1]


async def test_tls_connections_sharing_the_read_buffer_each_keep_their_own_bytes(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    # A server's TLS connections all decrypt into one buffer (``TlsClientConnection``).
    # Pieces of eight requests (cut in the request line, in the headers and twice in the
    # body), read in the same turns, must each reach the mail server whole.
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    bodies = [random.Random(i).randbytes(60_000 + 1_000 * i) for i in range(8)]
    wires = [request(body, close=True) for body in bodies]
    streams = [
        await asyncio.open_connection(
            "127.0.0.1", gw.port, ssl=gw.client_ssl, server_hostname="localhost"
        )
        for _ in bodies
    ]
    await asyncio.sleep(0.05)
    assert len(gw.server.state.connections) == len(bodies)
    assert all(isinstance(c, TlsClientConnection) for c in gw.server.state.connections)
    for start, end in pairwise((0, 30, 200, 5_000, 40_000, None)):
        # All eight pieces are sent before the gateway runs: it reads them in one turn.
        for (_, writer), wire in zip(streams, wires, strict=True):
            writer.write(wire[start:end])
        await asyncio.gather(*(writer.drain() for _, writer in streams))
        await asyncio.sleep(0.02)
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in streams))
    for (_, writer), body, answer in zip(streams, bodies, answers, strict=True):
        writer.close()
        assert f"ok {len(body)} {hashlib.sha256(body).hexdigest()}".encode() in answer
    assert sorted(s.body_size for s in upstream.seen) == sorted(len(b) for b in bodies)


async def test_expect_100_continue_and_chunked_request_body(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gw.port, ssl=gw.client_ssl, server_hostname="localhost"
    )
    head = (
        f"POST {SYNC} HTTP/1.1\r\nHost: h\r\nMS-ASProtocolVersion: 14.1\r\n"
        f"Authorization: {ALICE}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"ok 11 " in out
    assert "expect" not in upstream.seen[-1].headers


async def test_blocked_request_body_is_discarded_and_connection_kept(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(upstream.port)  # unknown device: blocked
    out = await exchange_raw(gw, request(b"y" * 5000, version="12.1") + request(close=True))
    assert out.count(b"HTTP/1.1 403 Forbidden") == 1
    assert out.count(b"HTTP/1.1 200 OK") == 1  # the 14.1 status-129 answer
    assert upstream.seen == []


async def test_limits_at_the_edge(upstream: FakeUpstream, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(upstream.port)
    big_header = request(extra="X-Big: " + "a" * 17_000 + "\r\n")
    assert (await exchange_raw(gw, big_header)).startswith(b"HTTP/1.1 431 ")
    long_query = request(target=SYNC + "&ItemId=" + "b" * 2100)
    assert (await exchange_raw(gw, long_query)).startswith(b"HTTP/1.1 414 ")
    too_big = (
        f"POST {SYNC} HTTP/1.1\r\nHost: h\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n"
    ).encode()
    out = await exchange_raw(gw, too_big)
    assert out.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in out
    many = request(extra="".join(f"X-H{i}: v\r\n" for i in range(120)))
    assert (await exchange_raw(gw, many)).startswith(b"HTTP/1.1 431 ")
    assert upstream.seen == []


async def test_malformed_http_gets_400_and_close(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(upstream.port)
    out = await exchange_raw(gw, b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = await exchange_raw(gw, b"\x16\x03garbage\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = await exchange_raw(gw, request(extra="Expect: something-else\r\n"))
    assert out.startswith(b"HTTP/1.1 417 ")
    # Two Authorization headers: we and the upstream could disagree on who is asking.
    twice = request(extra="Authorization: Basic YTpi\r\n", authorization="Basic Yzpk")
    out = await exchange_raw(gw, twice)
    assert out.startswith(b"HTTP/1.1 400 ") and b"duplicate authorization" in out


async def test_graceful_close_lets_a_held_request_finish(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    upstream.hold_s = 0.5
    ping = SYNC.replace("Cmd=Sync", "Cmd=Ping")
    held = asyncio.create_task(exchange_raw(gw, request(target=ping)))
    while gw.server.metrics.held == 0:
        await asyncio.sleep(0.01)
    await gw.server.close(5.0)
    out = await held
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in out  # told the device this connection ends
    # New connections are refused once closing.
    try:
        await exchange_raw(gw, request())
    except OSError:
        pass
    else:
        raise AssertionError("a closed server accepted a connection")


async def test_close_cuts_requests_still_held_at_the_deadline(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    upstream.hold_s = 30.0  # far beyond the deadline below
    ping = SYNC.replace("Cmd=Sync", "Cmd=Ping")
    held = asyncio.create_task(exchange_raw(gw, request(target=ping)))
    while gw.server.metrics.held == 0:
        await asyncio.sleep(0.01)
    await gw.server.close(0.2)
    out = await held
    assert out == b""  # cut, never a half answer
    assert gw.server.metrics.connections == 0
