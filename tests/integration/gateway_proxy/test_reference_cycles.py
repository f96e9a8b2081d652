"""The proxy's objects die by reference counting alone: a finished request, a closed
client connection and a closed upstream connection leave no reference cycle behind.

Why it matters: a node worker freezes what lives longer than a second (held Pings, idle
connections) out of the cyclic collector's reach (``proxy/collector.py``), so that its
passes stay short; anything of ours that only a cycle collection could free would then
stay in memory for good. So each scenario runs with the collector off and every
unreachable object kept (``gc.DEBUG_SAVEALL``), and nothing from ``onprem_gateway`` may
be among them. (Every test here runs on asyncio's loop and on uvloop: conftest.)"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Iterator

import aiohttp
import pytest

from onprem_gateway.proxy import Timeouts
from seg_contract import Access
from tests.integration.gateway_proxy.conftest import (
    FakeUpstream,
    Gateway,
    GatewayFactory,
    entry,
    policy_index,
)
from tests.integration.gateway_proxy.test_connection_auth import (  # noqa: F401 (fixture)
    Client,
    NtlmUpstream,
    allowed,
    ntlm_login,
    ntlm_upstream,
)
from tests.integration.gateway_proxy.test_revocation import (
    apply,
    blocked,
    headers,
    held,
    post,
    target,
)


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def cycles_of_ours(garbage: list[object]) -> list[str]:
    """The types of ours among the objects only a cycle collection would free."""
    await asyncio.sleep(0.2)  # let closing transports call connection_lost
    gc.collect()
    return sorted(
        {
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in garbage
            if str(getattr(type(o), "__module__", "")).startswith("onprem_gateway")
        }
    )


async def holding_pings(upstream: FakeUpstream, make_gateway: GatewayFactory) -> Gateway:
    """A gateway allowing alice's dev1, before an upstream that holds every Ping."""
    upstream.hold_s = 30.0
    upstream.hold_commands = ("Ping",)
    return await make_gateway(  # type: ignore[no-any-return]
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )


async def test_proxied_blocked_refused_and_revoked_requests(
    upstream: FakeUpstream, make_gateway: GatewayFactory, saved_garbage: list[object]
) -> None:
    gw = await holding_pings(upstream, make_gateway)
    tls = gw.client_ssl
    async with aiohttp.ClientSession() as session:
        for command in ("Sync", "FolderSync"):  # proxied, the connection kept alive
            url = gw.url + target(command, device="dev1")
            async with session.post(url, data=b"x", headers=headers(), ssl=tls) as r:
                assert r.status == 200
                await r.read()
        url = gw.url + target("Sync", device="unknown")  # blocked
        async with session.post(url, data=b"x", headers=headers(), ssl=tls) as r:
            await r.read()
        async with session.post(gw.url + target("Sync"), data=b"x", ssl=tls) as r:
            assert r.status == 401  # no credentials
        async with session.get(gw.url + "/nowhere", ssl=tls) as r:
            assert r.status == 404
        request = post(session, gw, target("Ping", device="dev1"), headers=headers())
        await held(gw, 1)
        while not any("Ping" in s.path_qs for s in upstream.seen):
            await asyncio.sleep(0.01)
        assert apply(gw, blocked("alice", "dev1")) == 1  # revoked while held
        response = await asyncio.wait_for(request, 10)
        await response.read()
    assert gw.server.metrics.revoked == {"answered": 1}
    assert await cycles_of_ours(saved_garbage) == []


async def test_a_device_that_goes_away_during_a_held_ping(
    upstream: FakeUpstream, make_gateway: GatewayFactory, saved_garbage: list[object]
) -> None:
    gw = await holding_pings(upstream, make_gateway)
    async with aiohttp.ClientSession() as session:
        request = post(session, gw, target("Ping", device="dev1"), headers=headers())
        await held(gw, 1)
        request.cancel()  # the device's connection goes away
    while gw.server.state.inflight_count():
        await asyncio.sleep(0.01)
    assert await cycles_of_ours(saved_garbage) == []


async def test_an_unreachable_mail_server(
    make_gateway: GatewayFactory, saved_garbage: list[object]
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    gw = await make_gateway(
        port,
        policy_index(devices=(entry("alice", "dev1", Access.ALLOW),)),
        timeouts=Timeouts(upstream_connect_s=1.0),
    )
    async with aiohttp.ClientSession() as session:
        url = gw.url + target("Sync", device="dev1")
        async with session.post(url, data=b"x", headers=headers(), ssl=gw.client_ssl) as r:
            assert r.status == 503
    assert await cycles_of_ours(saved_garbage) == []


async def test_an_ntlm_connection_and_its_private_upstream(
    ntlm_upstream: NtlmUpstream,  # noqa: F811 (the fixture imported above)
    make_gateway: GatewayFactory,
    saved_garbage: list[object],
) -> None:
    gw = await make_gateway(ntlm_upstream.port, allowed())
    client = await Client.open(gw)
    await ntlm_login(client)
    (conn,) = gw.server.state.connections
    private = conn.private_upstream
    assert private is not None
    client.close()
    while private.transport is not None:
        await asyncio.sleep(0.01)
    del conn, private
    assert await cycles_of_ours(saved_garbage) == []


async def test_a_failed_tls_handshake(
    make_gateway: GatewayFactory, saved_garbage: list[object]
) -> None:
    """A scanner speaking plain HTTP to the TLS port: the handshake fails and the
    protocol never sees connection_made nor connection_lost. On uvloop (what a node
    runs) nothing is left; asyncio's own loop keeps the failed handshake's traceback,
    whose frame holds the protocol, in a cycle of its own making, and that cycle is
    young garbage the collector frees before any freeze."""
    if not type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        pytest.skip("asyncio's accept path keeps the handshake error's traceback cycle")
    gw = await make_gateway(1)
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.read()  # the gateway closes it
        writer.close()
    assert await cycles_of_ours(saved_garbage) == []
