"""Revocation of held requests: when the policy changes, every in-flight request it no
longer admits ends at once, with the blocked answer for its command and protocol
version if nothing was answered yet, by cutting the connection otherwise."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from onprem_gateway.core.block_responses import STATUS_DEVICE_BLOCKED, STATUS_USER_DISABLED
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.revocation import EVERYONE, Affected, affected
from onprem_gateway.core.wbxml import CONTENT_TYPE
from onprem_gateway.proxy import state as state_module
from onprem_gateway.proxy.connection import ClientConnection
from onprem_gateway.proxy.events import REVOKED_PREFIX
from seg_contract import Access, ClusterSettings, DevicePassword, PushChange, UserCredential
from seg_contract.crypto import generate_cluster_keypair, hash_device_password, seal
from tests.integration.gateway_proxy.conftest import (
    ALICE,
    NOW,
    FakeUpstream,
    Gateway,
    GatewayFactory,
    entry,
    policy_index,
)

EAS = "/Microsoft-Server-ActiveSync"
BOB = "Basic " + base64.b64encode(b"bob:pw").decode()


def target(command: str, user: str = "alice", device: str = "DEV1") -> str:
    return f"{EAS}?Cmd={command}&User={user}&DeviceId={device}&DeviceType=iPhone"


def headers(version: str = "14.1", authorization: str = ALICE, **extra: str) -> dict[str, str]:
    return {"MS-ASProtocolVersion": version, "Authorization": authorization, **extra}


async def held(gw: Gateway, count: int) -> None:
    while gw.server.state.inflight_count() < count:
        await asyncio.sleep(0.01)


def apply(gw: Gateway, push: PushChange) -> int:
    """What a node does with a push: swap the policy, then tell the server."""
    gw.policy.index = gw.policy.index.apply_push(push).index
    return gw.server.policy_changed(affected(push))


def blocked(user: str, device: str) -> PushChange:
    return PushChange(
        cluster_id="c1", version=11, devices=(entry(user, device, Access.BLOCK, version=11),)
    )


def post(session: aiohttp.ClientSession, gw: Gateway, url: str, **kw: object) -> asyncio.Task:  # type: ignore[type-arg]
    return asyncio.create_task(session.post(gw.url + url, data=b"", ssl=gw.client_ssl, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "version"), [("Ping", "14.1"), ("Sync", "16.1"), ("Ping", "12.1")]
)
async def test_a_held_request_gets_its_blocked_answer_when_the_device_is_blocked(
    upstream: FakeUpstream, make_gateway: GatewayFactory, command: str, version: str
) -> None:
    upstream.hold_s = 30.0  # far beyond the test: only revocation can end it
    upstream.hold_commands = ("Ping", "Sync")  # Sync with Wait long-polls too
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    async with aiohttp.ClientSession() as session:
        request = post(session, gw, target(command), headers=headers(version))
        await held(gw, 1)
        while not upstream.seen:  # it reached the mail server and is held there
            await asyncio.sleep(0.01)
        assert apply(gw, blocked("alice", "dev1")) == 1
        response = await asyncio.wait_for(request, 10)
        body = await response.read()
    if version == "12.1":
        assert response.status == 403 and body == b""
    else:
        assert response.status == 200 and response.headers["Content-Type"] == CONTENT_TYPE
        assert str(STATUS_DEVICE_BLOCKED).encode() in body
    assert gw.server.metrics.revoked == {"answered": 1}
    assert gw.server.metrics.held == 0 and gw.server.metrics.in_flight == 0
    assert gw.server.state.inflight == {}
    revoked = [e for e in gw.sink.events if e.reason.startswith(REVOKED_PREFIX)]
    assert len(revoked) == 1 and revoked[0].decision is Access.BLOCK
    assert revoked[0].http_status == response.status and revoked[0].command == command


@contextlib.asynccontextmanager
async def alices_held_ping(
    upstream: FakeUpstream, make_gateway: GatewayFactory, **extra: str
) -> AsyncIterator[tuple[Gateway, asyncio.Task]]:  # type: ignore[type-arg]
    """A gateway that admits alice's dev1, and her Ping held at the mail server."""
    upstream.hold_s = 30.0
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    async with aiohttp.ClientSession() as session:
        task = post(session, gw, target("Ping"), headers=headers(**extra))
        await held(gw, 1)
        yield gw, task


async def test_a_held_ping_keeps_none_of_its_parsed_headers(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    # A held Ping lives up to an hour, so what it holds is memory per held device. Its
    # parsed headers go once the head is forwarded (the forwarded head itself is kept,
    # to send again on a new upstream connection): neither the flow nor the client
    # connection that parsed them keeps them.
    async with alices_held_ping(upstream, make_gateway, **{"X-Pad": "p" * 4000}) as (gw, request):
        while not upstream.seen:
            await asyncio.sleep(0.01)
        (conn,) = gw.server.state.connections
        assert isinstance(conn, ClientConnection) and conn.current is not None
        assert conn.current.headers == [] and conn.current.lookup == {}
        assert conn._headers == [] and conn._lookup == {}
        upstream.release.set()
        assert (await asyncio.wait_for(request, 10)).status == 200


async def test_a_blocked_user_ends_every_held_request_of_that_user_only(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    upstream.hold_s = 30.0
    index = policy_index(
        devices=(
            entry("alice", "dev1", Access.ALLOW),
            entry("alice", "dev2", Access.ALLOW),
            entry("bob", "dev3", Access.ALLOW),
        ),
    )
    gw = await make_gateway(upstream.port, index)
    async with aiohttp.ClientSession() as session:
        alices = [
            post(session, gw, target("Ping", device=d), headers=headers()) for d in ("DEV1", "DEV2")
        ]
        bobs = post(session, gw, target("Ping", "bob", "DEV3"), headers=headers(authorization=BOB))
        await held(gw, 3)
        settings = ClusterSettings(blocked_users=("CORP\\Alice",))
        assert apply(gw, PushChange(cluster_id="c1", version=11, settings=settings)) == 2
        for task in alices:
            response = await asyncio.wait_for(task, 10)
            assert response.status == 200
            assert str(STATUS_USER_DISABLED).encode() in await response.read()
        assert gw.server.state.inflight_count() == 1 and not bobs.done()
        upstream.release.set()
        assert (await asyncio.wait_for(bobs, 10)).status == 200


async def test_an_answer_already_started_is_cut(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gw.url + target("ItemOperations"),
            data=b"x",
            headers=headers(**{"X-Test-Hold-After-Head": "1"}),
            ssl=gw.client_ssl,
        )
        assert response.status == 200
        assert await response.content.readexactly(7) == b"partial"
        assert apply(gw, blocked("alice", "dev1")) == 1
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(response.read(), 10)
    assert gw.server.metrics.revoked == {"closed": 1}
    cut = [e.http_status for e in gw.sink.events if e.reason.startswith(REVOKED_PREFIX)]
    assert cut == [0]


async def test_a_change_that_still_admits_the_request_leaves_it_alone(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    async with alices_held_ping(upstream, make_gateway) as (gw, task):
        assert gw.server.policy_changed(EVERYONE) == 0
        assert gw.server.policy_changed(Affected(False, frozenset({"alice"}))) == 0
        assert apply(gw, blocked("bob", "dev9")) == 0
        assert not task.done() and gw.server.metrics.held == 1
        upstream.release.set()
        assert (await asyncio.wait_for(task, 10)).status == 200


async def test_a_withdrawn_device_password_ends_held_requests_with_401(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    upstream.hold_s = 30.0
    private, public = generate_cluster_keypair()
    credential = UserCredential(
        user="alice",
        device_passwords=(
            DevicePassword(device_id="dev1", pw1_hash=hash_device_password("pw1", n=2**10)),
        ),
        sealed_pw2=seal("pw2", public),
        version=3,
        updated_at=NOW,
    )
    index = policy_index(devices=(entry("alice", "dev1", Access.ALLOW),), credentials=(credential,))
    gw = await make_gateway(upstream.port, index, cluster_private_key=private)
    pw1 = "Basic " + base64.b64encode(b"alice:pw1").decode()
    async with aiohttp.ClientSession() as session:
        task = post(session, gw, target("Ping"), headers=headers(authorization=pw1))
        await held(gw, 1)
        while not upstream.seen:
            await asyncio.sleep(0.01)
        withdrawn = credential.model_copy(update={"device_passwords": (), "version": 11})
        assert apply(gw, PushChange(cluster_id="c1", version=11, credentials=(withdrawn,))) == 1
        response = await asyncio.wait_for(task, 10)
        assert response.status == 401 and "Basic" in response.headers["WWW-Authenticate"]


async def test_the_in_flight_index_is_empty_after_requests_end(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        upstream.port, policy_index(devices=(entry("alice", "dev1", Access.ALLOW),))
    )
    async with aiohttp.ClientSession() as session:
        for command in ("Sync", "FolderSync", "Provision"):
            async with session.post(
                gw.url + target(command), data=b"x", headers=headers(), ssl=gw.client_ssl
            ) as r:
                assert r.status == 200
    assert gw.server.state.inflight == {}


FIVE = [f"dev{i}" for i in range(5)]


def alice_devices(access: Access) -> PolicyIndex:
    return policy_index(devices=tuple(entry("alice", d, access) for d in FIVE))


@pytest.fixture
async def sliced(
    upstream: FakeUpstream, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    """A gateway that decides held requests again 2 per turn, Pings held upstream."""
    monkeypatch.setattr(state_module, "REDECIDE_SLICE", 2)
    upstream.hold_s = 30.0
    return await make_gateway(upstream.port, alice_devices(Access.ALLOW))


async def test_a_whole_new_policy_decides_held_requests_again_a_slice_per_turn(
    upstream: FakeUpstream, sliced: Gateway
) -> None:
    # A replacement or the policy failing closed decides every held request again:
    # thousands of them in one turn would stall the worker, so a slice per turn, each
    # with the policy in force when its turn comes.
    gw = sliced
    async with aiohttp.ClientSession() as session:
        pings = [post(session, gw, target("Ping", device=d), headers=headers()) for d in FIVE]
        await held(gw, 5)
        gw.policy.index = alice_devices(Access.BLOCK)
        assert gw.server.policy_changed(EVERYONE) == 2  # the first slice at once
        assert gw.server.state.inflight_count() == 3
        await asyncio.sleep(0)  # the next turn: the next slice
        assert gw.server.state.inflight_count() == 1
        gw.policy.index = alice_devices(Access.ALLOW)  # before the last slice's turn
        await asyncio.sleep(0)
        assert gw.server.state.inflight_count() == 1  # decided with the policy in force
        answered = [await asyncio.wait_for(p, 10) for p in pings[:4]]
        assert all(r.status == 200 for r in answered) and not pings[4].done()
        for response in answered:
            assert str(STATUS_DEVICE_BLOCKED).encode() in await response.read()
        upstream.release.set()
        assert (await asyncio.wait_for(pings[4], 10)).status == 200
    assert gw.server.metrics.revoked == {"answered": 4}


async def test_a_later_whole_policy_pass_takes_over_from_one_still_going(
    sliced: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = sliced
    state = gw.server.state
    slices: list[int] = []
    recheck = state._recheck

    def counted(targets):  # type: ignore[no-untyped-def]
        slices.append(len(targets))
        return recheck(targets)

    monkeypatch.setattr(state, "_recheck", counted)
    async with aiohttp.ClientSession() as session:
        pings = [post(session, gw, target("Ping", device=d), headers=headers()) for d in FIVE]
        await held(gw, 5)
        gw.policy.index = alice_devices(Access.BLOCK)
        assert gw.server.policy_changed(EVERYONE) == 2
        assert gw.server.policy_changed(EVERYONE) == 2  # before the first pass's next turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert state.inflight_count() == 0
        # The first pass stopped after its first slice; the second went on alone.
        assert slices == [2, 2, 1]
        for ping in pings:
            assert (await asyncio.wait_for(ping, 10)).status == 200
