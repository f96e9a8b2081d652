"""The gateway's edge: the request-head deadline, the per-address connection cap, the
Host check, forwarding headers, device passwords (binding and failure limit) and
Autodiscover decided by user."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl
import time

import pytest

from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy import Limits, Timeouts
from seg_contract import Access, DevicePassword, FailMode, UserCredential
from seg_contract.crypto import generate_cluster_keypair, hash_device_password, seal
from tests.integration.gateway_proxy.conftest import (
    ALICE,
    FakeUpstream,
    Gateway,
    GatewayFactory,
    entry,
    policy_index,
)

SYNC = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=DEV1&DeviceType=iPhone"
AUTODISCOVER = "/autodiscover/autodiscover.xml"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def head(
    target: str = SYNC,
    *,
    host: str | None = "seg.example.com",
    authorization: str | None = ALICE,
    extra: str = "",
    body: bytes = b"x",
) -> bytes:
    lines = [f"POST {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += ["MS-ASProtocolVersion: 14.1", f"Content-Length: {len(body)}"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    text = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return text.encode() + body


async def connect(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", gw.port, ssl=gw.client_ssl, server_hostname="localhost"
    )


async def one(gw: Gateway, data: bytes) -> bytes:
    """Send ``data`` (with Connection: close semantics: read to EOF)."""
    reader, writer = await connect(gw)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def allowed(**settings: object) -> PolicyIndex:
    return policy_index(devices=(entry("alice", "dev1", Access.ALLOW),), **settings)


# --- the request head deadline ------------------------------------------------------------


async def test_a_head_trickling_in_is_cut_at_its_deadline(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    """Each byte arrives well within the idle timeout, so only an absolute deadline for
    the whole head can end this; the client would need 40 s to finish it."""
    gw = await make_gateway(
        upstream.port, allowed(), timeouts=Timeouts(header_s=1.0, upstream_connect_s=2.0)
    )
    reader, writer = await connect(gw)
    data = head()
    sent = 0
    answer = b""
    try:
        while sent < len(data):
            writer.write(data[sent : sent + 1])
            sent += 1
            try:
                answer = await asyncio.wait_for(reader.read(), 0.2)
            except TimeoutError:
                continue
            break
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert sent < len(data)  # cut before the head was complete
    assert gw.server.metrics.header_timeouts == 1
    assert upstream.seen == []


async def test_a_head_sent_at_once_is_not_affected(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, allowed(), timeouts=Timeouts(header_s=1.0, upstream_connect_s=2.0)
    )
    reader, writer = await connect(gw)
    try:
        for _ in range(3):  # keep-alive: each head gets its own deadline
            writer.write(head())
            await asyncio.wait_for(reader.readuntil(b"ok 1 "), 10)
            await asyncio.sleep(0.6)  # idle between requests is the keep-alive timeout's
    finally:
        writer.close()
    assert gw.server.metrics.header_timeouts == 0


# --- connections per client address ---------------------------------------------------------


async def test_connections_per_address_are_capped(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(upstream.port, allowed(), limits=Limits(max_connections_per_ip=3))
    held = [await connect(gw) for _ in range(3)]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port, ssl=gw.client_ssl, server_hostname="localhost"
        )
        writer.write(head())
        refused = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    except (ssl.SSLError, ConnectionError):
        refused = b""
    finally:
        for _, w in held:
            w.close()
    assert refused == b""  # closed at accept, never served
    assert gw.server.metrics.connections_refused_per_ip == 1
    # Once those close, the address may connect again.
    for _ in range(100):
        if not gw.server.state.per_ip:
            break
        await asyncio.sleep(0.02)
    assert (await one(gw, head(extra="Connection: close\r\n"))).startswith(b"HTTP/1.1 200 ")


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port,
        allowed(),
        limits=Limits(max_connections_per_ip=2),
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    conns = []
    try:
        for _ in range(2):
            reader, writer = await connect(gw)
            writer.write(head(extra="X-Forwarded-For: 203.0.113.5\r\n"))
            await asyncio.wait_for(reader.readuntil(b"ok 1 "), 10)
            conns.append(writer)
        # The balancer's own address is not capped; the third connection for the same
        # client is.
        third = await one(gw, head(extra="X-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n"))
        assert third.startswith(b"HTTP/1.1 429 ")
        other = await one(gw, head(extra="X-Forwarded-For: 203.0.113.6\r\nConnection: close\r\n"))
        assert other.startswith(b"HTTP/1.1 200 ")
    finally:
        for w in conns:
            w.close()
    assert gw.server.state.per_ip.get("127.0.0.1") is None


# --- Host and forwarding headers ---------------------------------------------------------------


async def test_host_must_be_one_of_the_public_names(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(upstream.port, allowed(), public_hosts=frozenset({"seg.example.com"}))
    close = "Connection: close\r\n"
    assert (await one(gw, head(host="SEG.example.com:443", extra=close))).startswith(
        b"HTTP/1.1 200 "
    )
    assert (await one(gw, head(host="mail.corp.internal", extra=close))).startswith(
        b"HTTP/1.1 421 "
    )
    no_host = b"POST " + SYNC.encode() + b" HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
    assert (await one(gw, no_host)).startswith(b"HTTP/1.1 400 ")
    assert len(upstream.seen) == 1
    assert upstream.seen[0].headers["host"] == "SEG.example.com:443"


FORGED = (
    "Forwarded: for=6.6.6.6;host=evil\r\nX-Real-IP: 6.6.6.6\r\n"
    "X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\nX-Forwarded-For: 6.6.6.6\r\n"
    "Connection: close\r\n"
)


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarding_headers_pass_only_from_a_trusted_proxy(
    upstream: FakeUpstream, make_gateway: GatewayFactory, trusted: bool
) -> None:
    nets = (ipaddress.ip_network("127.0.0.1/32"),) if trusted else ()
    gw = await make_gateway(upstream.port, allowed(), trusted_proxies=nets)
    assert (await one(gw, head(extra=FORGED))).startswith(b"HTTP/1.1 200 ")
    seen = upstream.seen[-1].headers
    for name in ("forwarded", "x-real-ip", "x-forwarded-host", "x-forwarded-port"):
        assert (name in seen) is trusted
    expected_for = "6.6.6.6, 127.0.0.1" if trusted else "127.0.0.1"
    assert seen["x-forwarded-for"] == expected_for


# --- device passwords -------------------------------------------------------------------


@pytest.fixture
def substituted() -> tuple[str, PolicyIndex]:
    private, public = generate_cluster_keypair()
    credential = UserCredential(
        user="alice",
        device_passwords=(
            DevicePassword(device_id="dev1", pw1_hash=hash_device_password("pw1-dev1", n=2**10)),
        ),
        sealed_pw2=seal("the real password", public),
        version=3,
        updated_at=dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
    )
    index = policy_index(
        devices=(entry("alice", "dev1", Access.ALLOW), entry("alice", "dev2", Access.ALLOW)),
        credentials=(credential,),
    )
    return private, index


async def test_a_device_password_works_only_from_its_device(
    upstream: FakeUpstream, make_gateway: GatewayFactory, substituted: tuple[str, PolicyIndex]
) -> None:
    private, index = substituted
    gw = await make_gateway(upstream.port, index, cluster_private_key=private)
    close = "Connection: close\r\n"
    ok = await one(gw, head(authorization=basic("alice", "pw1-dev1"), extra=close))
    assert ok.startswith(b"HTTP/1.1 200 ")
    assert upstream.seen[-1].headers["authorization"] == basic("alice", "the real password")
    other_device = SYNC.replace("DEV1", "DEV2")
    refused = await one(
        gw, head(other_device, authorization=basic("alice", "pw1-dev1"), extra=close)
    )
    assert refused.startswith(b"HTTP/1.1 401 ") and b"wrong device password" in refused
    assert len(upstream.seen) == 1


async def test_wrong_device_passwords_are_limited_before_any_hashing(
    upstream: FakeUpstream, make_gateway: GatewayFactory, substituted: tuple[str, PolicyIndex]
) -> None:
    private, index = substituted
    calls: list[int] = []

    def counting_verify(password: str, hashes: object) -> bool:
        calls.append(1)
        return False

    gw = await make_gateway(
        upstream.port,
        index,
        cluster_private_key=private,
        limits=Limits(pw1_max_failures=2, pw1_failure_window_s=300.0),
    )
    gw.server.state.substitution._verify = counting_verify  # count scrypt runs
    close = "Connection: close\r\n"
    answers = [
        await one(gw, head(authorization=basic("alice", f"guess{i}"), extra=close))
        for i in range(5)
    ]
    assert all(a.startswith(b"HTTP/1.1 401 ") for a in answers)
    assert all(b'WWW-Authenticate: Basic realm="Exchange ActiveSync"' in a for a in answers)
    assert sum(b"too many wrong device passwords" in a for a in answers) == 3
    assert len(calls) == 2  # only the first two were hashed
    assert gw.server.metrics.pw1_limited == 3
    assert upstream.seen == []


# --- Autodiscover ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "authorization", "status"),
    [
        (allowed(), ALICE, 200),
        (allowed(blocked_users=("CORP\\alice",)), ALICE, 403),
        (PolicyIndex.empty(), ALICE, 503),
        (allowed(), None, 401),
        (allowed(), "Basic\t" + ALICE[6:], 401),
    ],
    ids=["allowed", "user blocked", "no policy", "anonymous", "malformed"],
)
async def test_autodiscover_is_decided_by_user(
    upstream: FakeUpstream,
    make_gateway: GatewayFactory,
    index: PolicyIndex,
    authorization: str | None,
    status: int,
) -> None:
    gw = await make_gateway(upstream.port, index)
    out = await one(
        gw, head(AUTODISCOVER, authorization=authorization, extra="Connection: close\r\n")
    )
    assert out.startswith(f"HTTP/1.1 {status} ".encode())
    assert len(upstream.seen) == (1 if status == 200 else 0)
    (event,) = gw.sink.events
    assert event.command == "Autodiscover" and event.http_status == status


async def test_autodiscover_fails_closed_with_an_expired_policy(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    index = allowed(max_policy_age_s=300, fail_mode=FailMode.CLOSED)
    stale = PolicyIndex.from_snapshot(index.to_snapshot(), time.time() - 3600)
    gw = await make_gateway(upstream.port, stale)
    out = await one(gw, head(AUTODISCOVER, extra="Connection: close\r\n"))
    assert out.startswith(b"HTTP/1.1 503 ") and upstream.seen == []
    assert gw.sink.events[0].rule == "fail_closed"
