"""Connection-oriented authentication through the proxy (NTLM, Negotiate), Bearer, and
the rule that keeps an authenticated upstream connection private to its client.

The upstream here authenticates per TCP connection, as IIS does with NTLM: a NEGOTIATE
gets a 401 CHALLENGE, an AUTHENTICATE on the same connection authenticates it, and from
then on requests without credentials on that connection are "you are <user>". Every
answer names the upstream connection it came on (its client port), so the tests can
prove which connection served whom."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from seg_contract import Access, UnverifiableIdentity
from tests.integration.gateway_proxy.conftest import (
    ALICE,
    Gateway,
    GatewayFactory,
    entry,
    policy_index,
    serve_tls,
)
from tests.support.tokens import Issuer
from tests.unit.gateway_core import ntlm_messages as m

SYNC = "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId={device}&DeviceType=iPhone&User={user}"


def _type3_account(blob: bytes) -> str:
    """DOMAIN\\user of an AUTHENTICATE message, read from MS-NLMP 2.2.1.3's fixed
    offsets (the upstream's own reading, independent of the gateway's parser)."""

    def field_at(at: int) -> str:
        length, _, offset = struct.unpack_from("<HHI", blob, at)
        return blob[offset : offset + length].decode("utf-16-le")

    domain, user = field_at(28), field_at(36)
    return f"{domain}\\{user}" if domain else user


@dataclass
class NtlmUpstream:
    """Authenticates connections, NTLM-style. ``negotiate_answer`` overrides the status
    of the 401 CHALLENGE (to play a misbehaving server)."""

    authenticated: dict[object, str] = field(default_factory=dict)
    challenged: set[object] = field(default_factory=set)
    served: list[tuple[int, str, str]] = field(default_factory=list)  # (port, path, as)
    negotiate_answer: int = 401
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        transport = request.transport
        assert transport is not None
        peer_port = transport.get_extra_info("peername")[1]
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme in ("NTLM", "Negotiate") and token:
            blob = base64.b64decode(token)
            if blob[8:12] == b"\x01\x00\x00\x00":
                self.challenged.add(transport)
                self.authenticated.pop(transport, None)
                if self.negotiate_answer != 401:
                    self.served.append((peer_port, request.path, "?"))
                    return web.Response(status=self.negotiate_answer, text="served anonymously")
                return web.Response(
                    status=401,
                    headers={
                        "WWW-Authenticate": f"{scheme} {base64.b64encode(m.challenge()).decode()}"
                    },
                )
            if blob[8:12] == b"\x03\x00\x00\x00" and transport in self.challenged:
                self.challenged.discard(transport)
                self.authenticated[transport] = _type3_account(blob)
            else:
                return web.Response(status=401, headers={"WWW-Authenticate": "NTLM"})
        elif scheme == "Basic":
            user, _, password = base64.b64decode(token).decode().partition(":")
            if password != "pw":
                return web.Response(
                    status=401,
                    headers={"WWW-Authenticate": "NTLM"},  # offers connection auth
                )
            self.served.append((peer_port, request.path, user))
            return web.Response(text=f"you are {user} on {peer_port}")
        elif scheme == "Bearer":
            self.served.append((peer_port, request.path, "bearer"))
            return web.Response(text=f"you are a bearer on {peer_port}")
        who = self.authenticated.get(transport)
        if who is None:
            return web.Response(status=401, headers={"WWW-Authenticate": "NTLM"})
        self.served.append((peer_port, request.path, who))
        return web.Response(text=f"you are {who} on {peer_port}")


@pytest.fixture
async def ntlm_upstream(certs: dict[str, tuple[Path, Path]]) -> AsyncIterator[NtlmUpstream]:
    up = NtlmUpstream()
    runner, up.port = await serve_tls(up.handle, certs["upstream"], keepalive_timeout=60)
    yield up
    await runner.cleanup()


class Client:
    """One keep-alive HTTP/1.1 connection to the gateway, raw bytes over TLS."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, gw: Gateway) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port, ssl=gw.client_ssl, server_hostname="localhost"
        )
        return cls(reader, writer)

    async def send(
        self, target: str, authorization: str | None = None, body: bytes = b"x"
    ) -> tuple[int, dict[str, str], bytes]:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: seg.example.com\r\nMS-ASProtocolVersion: 14.1\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if authorization:
            head += f"Authorization: {authorization}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw_head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                # Repeated fields (several challenges) joined as RFC 9110 5.3 allows.
                headers[key] = (
                    f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
                )
        length = int(headers.get("content-length", "0"))
        body_in = await asyncio.wait_for(self.reader.readexactly(length), 10) if length else b""
        return status, headers, body_in

    def close(self) -> None:
        self.writer.close()


def sync(user: str = "alice", device: str = "DEV1") -> str:
    return SYNC.format(user=user, device=device)


def allowed(**settings: object) -> object:
    return policy_index(
        devices=(
            entry("alice", "dev1", Access.ALLOW),
            entry("bob", "dev2", Access.ALLOW),
            entry("mallory", "dev3", Access.ALLOW),
        ),
        **settings,
    )


async def ntlm_login(client: Client, user: str = "alice", domain: str = "CORP") -> bytes:
    status, headers, _ = await client.send(sync(user), m.header("NTLM", m.negotiate()))
    assert status == 401 and headers["www-authenticate"].startswith("NTLM ")
    status, _, body = await client.send(sync(user), m.header("NTLM", m.authenticate(user, domain)))
    assert status == 200, body
    return body


async def test_an_ntlm_handshake_over_keep_alive_works_end_to_end(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(ntlm_upstream.port, allowed())
    client = await Client.open(gw)
    try:
        first = await ntlm_login(client)
        assert first.startswith(b"you are CORP\\alice on ")
        # Later requests on the connection carry no credentials: IIS serves them as the
        # connection's user, and the gateway decides them as that user, whatever the
        # query claims.
        status, _, body = await client.send(sync(user="mallory", device="DEV1"))
        assert status == 200 and body == first
    finally:
        client.close()
    users = [(e.user, e.http_status) for e in gw.sink.events]
    assert users == [("alice", 200), ("alice", 200)]  # the NEGOTIATE leg is not decided
    # The NEGOTIATE leg reached the upstream without its body.
    assert ntlm_upstream.challenged == set()


async def test_other_clients_never_get_an_authenticated_upstream_connection(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    """The issue's reproduction: after one client's NTLM handshake, 20 other clients
    sending no credentials were served as that user. Now: 20 of 20 are refused by the
    gateway, 20 of 20 with their own Basic credentials are answered as themselves, and
    not one of them is ever sent on the first client's upstream connection."""
    gw = await make_gateway(ntlm_upstream.port, allowed())
    owner = await Client.open(gw)
    try:
        first = await ntlm_login(owner)
        private_port = int(first.rsplit(b" ", 1)[1])

        async def anonymous() -> int:
            other = await Client.open(gw)
            try:
                status, _, _ = await other.send(sync(user="alice", device="DEV1"))
                return status
            finally:
                other.close()

        async def as_bob() -> bytes:
            other = await Client.open(gw)
            try:
                status, _, body = await other.send(sync("bob", "DEV2"), "Basic Ym9iOnB3")
                assert status == 200
                return body
            finally:
                other.close()

        statuses = await asyncio.gather(*(anonymous() for _ in range(20)))
        assert statuses == [401] * 20
        bodies = await asyncio.gather(*(as_bob() for _ in range(20)))
        assert all(body.startswith(b"you are bob on ") for body in bodies)
        # The owner's connection still works as alice, on its own upstream connection.
        status, _, body = await owner.send(sync())
        assert status == 200 and body == first
    finally:
        owner.close()
    others = [port for port, _, who in ntlm_upstream.served if who != "CORP\\alice"]
    assert len(others) == 20 and private_port not in others


async def test_a_401_offering_ntlm_makes_the_connection_private(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(ntlm_upstream.port, allowed())
    client = await Client.open(gw)
    try:
        status, headers, _ = await client.send(sync(), "Basic YWxpY2U6d3Jvbmc=")  # wrong pw
        assert status == 401 and headers["www-authenticate"] == "NTLM"
        (conn,) = gw.server.state.connections
        assert conn.private_upstream is not None
        assert gw.server.state.pool._idle == {}  # not back in the pool
        private = conn.private_upstream
        assert private.transport is not None
        private_port = private.transport.get_extra_info("sockname")[1]
        # Another client gets a connection of its own.
        other = await Client.open(gw)
        status, _, body = await other.send(sync("bob", "DEV2"), "Basic Ym9iOnB3")
        other.close()
        assert status == 200 and int(body.rsplit(b" ", 1)[1]) != private_port
        assert conn.private_upstream is private and private.owner is None  # idle, kept
    finally:
        client.close()


async def test_the_private_connection_closes_with_its_client(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(ntlm_upstream.port, allowed())
    client = await Client.open(gw)
    await ntlm_login(client)
    (conn,) = gw.server.state.connections
    private = conn.private_upstream
    assert private is not None and private.private_to is conn
    client.close()
    for _ in range(200):
        if private.transport is None:
            break
        await asyncio.sleep(0.01)
    assert private.transport is None  # closed with its client, never pooled
    assert gw.server.state.pool._idle == {}


async def test_a_negotiate_leg_answered_with_content_is_not_relayed(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    ntlm_upstream.negotiate_answer = 200  # a server that does not require auth
    gw = await make_gateway(ntlm_upstream.port, allowed())
    client = await Client.open(gw)
    try:
        status, _, body = await client.send(sync(), m.header("NTLM", m.negotiate()))
    finally:
        client.close()
    assert status == 502 and b"served anonymously" not in body
    assert gw.sink.events == []


async def test_an_authenticate_leg_of_a_blocked_user_is_blocked(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(ntlm_upstream.port, allowed(blocked_users=("alice",)))
    client = await Client.open(gw)
    try:
        status, _, _ = await client.send(sync(), m.header("NTLM", m.negotiate()))
        assert status == 401
        status, _, body = await client.send(
            sync(user="bob", device="DEV2"), m.header("NTLM", m.authenticate("alice", "CORP"))
        )
        assert status == 200 and body.startswith(b"\x03\x01j\x00")  # WBXML status 126
        # The connection proved nothing: a request without credentials is asked again.
        status, _, _ = await client.send(sync("bob", "DEV2"))
        assert status == 401
    finally:
        client.close()
    assert [(e.user, e.rule) for e in gw.sink.events] == [
        ("alice", "user_block"),
        ("bob", "auth_required"),
    ]


async def test_kerberos_follows_the_cluster_setting(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    kerberos = m.header("Negotiate", m.kerberos_ticket())
    gw = await make_gateway(ntlm_upstream.port, allowed())  # refuse (the default)
    client = await Client.open(gw)
    try:
        status, headers, _ = await client.send(sync(), kerberos)
        assert status == 401 and "cannot verify" in gw.sink.events[-1].reason
        assert "Negotiate" not in headers["www-authenticate"]  # not offered under refuse
    finally:
        client.close()
    gw = await make_gateway(
        ntlm_upstream.port, allowed(unverifiable_identity=UnverifiableIdentity.DEVICE_ONLY)
    )
    client = await Client.open(gw)
    try:
        status, _, _ = await client.send(sync("alice", "DEV1"), kerberos)
        assert status == 401  # forwarded: the fake upstream does not do Kerberos
        assert gw.sink.events[-1].user == "alice" and gw.sink.events[-1].http_status == 401
        status, _, body = await client.send(sync("alice", "DEV3"), kerberos)  # mallory's
        assert status == 200 and gw.sink.events[-1].rule == "unverifiable_identity"
        assert body.startswith(b"\x03\x01j\x00")
    finally:
        client.close()


async def test_bearer_tokens_are_verified_against_the_clusters_issuers(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    issuer = Issuer()
    gw = await make_gateway(ntlm_upstream.port, allowed(bearer_issuers=(issuer.contract(),)))
    client = await Client.open(gw)
    try:
        status, _, body = await client.send(
            sync(user="mallory", device="DEV2"), f"Bearer {issuer.token('bob@corp.example')}"
        )
        assert status == 200 and body.startswith(b"you are a bearer")
        assert gw.sink.events[-1].user == "bob"  # the token's upn, not the query's user
        forged = Issuer(kid=issuer.kid).token("bob@corp.example")
        status, headers, body = await client.send(sync("bob", "DEV2"), f"Bearer {forged}")
        assert status == 401
        assert headers["www-authenticate"].startswith('Bearer error="invalid_token", NTLM')
        assert b"signature" in body
    finally:
        client.close()
    assert len(ntlm_upstream.served) == 1


async def test_basic_with_a_tab_is_refused_not_decided_by_the_query(
    ntlm_upstream: NtlmUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(ntlm_upstream.port, allowed())
    client = await Client.open(gw)
    try:
        status, headers, body = await client.send(sync(), "Basic\t" + ALICE.split(" ")[1])
    finally:
        client.close()
    assert status == 401 and b"one space" in body
    assert headers["www-authenticate"] == 'NTLM, Basic realm="Exchange ActiveSync"'
    assert ntlm_upstream.served == []
