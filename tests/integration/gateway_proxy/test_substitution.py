"""Credential substitution through the proxy (the seed's PW1 -> PW2)."""

from __future__ import annotations

import base64
import datetime as dt

import aiohttp

from seg_contract import Access, UserCredential
from seg_contract.crypto import generate_cluster_keypair, hash_device_password, seal
from tests.integration.gateway_proxy.conftest import (
    FakeUpstream,
    GatewayFactory,
    entry,
    policy_index,
)

SYNC = "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=DEV1&DeviceType=iPhone"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_right_pw1_is_replaced_by_pw2_and_wrong_pw1_never_forwarded(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    private, public = generate_cluster_keypair()
    credential = UserCredential(
        user="alice",
        pw1_hashes=(hash_device_password("device-pw-1", n=2**10),),
        sealed_pw2=seal("the real Exchange password", public),
        version=3,
        updated_at=dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
    )
    index = policy_index(devices=(entry("alice", "dev1", Access.ALLOW),), credentials=(credential,))
    gw = await make_gateway(upstream.port, index, cluster_private_key=private)
    headers = {"MS-ASProtocolVersion": "14.1"}
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # the second request is answered from the verify cache
            async with session.post(
                gw.url + SYNC,
                data=b"x",
                headers={**headers, "Authorization": basic("CORP\\alice", "device-pw-1")},
                ssl=gw.client_ssl,
            ) as r:
                assert r.status == 200
        assert upstream.seen[-1].headers["authorization"] == basic(
            "CORP\\alice", "the real Exchange password"
        )
        assert len(upstream.seen) == 2

        async with session.post(
            gw.url + SYNC,
            data=b"x",
            headers={**headers, "Authorization": basic("alice", "guess")},
            ssl=gw.client_ssl,
        ) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        async with session.post(
            gw.url + SYNC + "&User=alice", data=b"x", headers=headers, ssl=gw.client_ssl
        ) as r:
            # No credentials at all for a substituted user: challenged, not forwarded.
            assert r.status == 401
    assert len(upstream.seen) == 2
    assert [e.http_status for e in gw.sink.events] == [200, 200, 401, 401]
    assert all("device-pw" not in e.model_dump_json() for e in gw.sink.events)


async def test_substituted_user_on_a_node_without_the_cluster_key_gets_503(
    upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    _, public = generate_cluster_keypair()
    credential = UserCredential(
        user="alice",
        pw1_hashes=(hash_device_password("device-pw-1", n=2**10),),
        sealed_pw2=seal("pw2", public),
        version=1,
        updated_at=dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
    )
    index = policy_index(devices=(entry("alice", "dev1", Access.ALLOW),), credentials=(credential,))
    gw = await make_gateway(upstream.port, index)  # no cluster_private_key
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            gw.url + SYNC,
            data=b"x",
            headers={
                "MS-ASProtocolVersion": "14.1",
                "Authorization": basic("alice", "device-pw-1"),
            },
            ssl=gw.client_ssl,
        ) as r,
    ):
        assert r.status == 503
        assert "Retry-After" in r.headers
    assert upstream.seen == []
