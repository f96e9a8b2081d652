"""A test double of the control plane's gateway endpoints (API.md "Gateways" and the
WebSocket API), on 127.0.0.1 with aiohttp: enough behaviour to drive the node agent
through every path, and a record of what the node sent.

It keeps one cluster's policy the way the real control plane does (contract v2,
``seg_contract.models``): versions are *taken* from a counter, *written* (or abandoned)
later and in any order, and the *committed* version W is the highest one with every
version up to it settled. Only W is ever stated (snapshot, delta, pong); a snapshot may
include writes newer than W; a pong judges the digest the keepalive reported against
the double's own digest of that version (``seg_contract.digest``).

Everything it states is signed as the real control plane signs it
(``seg_contract.signing``) with a local key, ``signer``, that the node under test pins;
``signer`` may be swapped for another key (a rotation, or a forger).

Failure modes a test can switch on: keepalives accepted but never answered (a hung
control plane), HTTP calls that hang, 401/403 with or without the control plane's
``X-SEG-Credential: rejected`` mark (a revoked credential versus a WAF in the path),
a WebSocket handshake refusal that lost the mark on the way (API Gateway), and pushes
altered after they were signed (a man in the middle).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from seg_contract import (
    Access,
    AccessEventBatch,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    GatewayKeepalive,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushPong,
    PushRevoked,
)
from seg_contract.digest import policy_digest, to_hex
from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE
from seg_contract.key_ring import AnnouncedKey, AnnouncedState, SigningKeySet
from seg_contract.signing import Kind, LocalSigner, SignedMessage, SignedPayload, issue

CLUSTER = "c-test"
CREDENTIAL = "segc_c-test_k1_secretsecret"


def entry(user: str, device_id: str, access: Access, version: int, reason: str = "") -> DeviceEntry:
    return DeviceEntry(
        user=user,
        device_id=device_id,
        access=access,
        reason=reason or f"{access.value} by test",
        source=EntrySource.COMPLIANCE,
        version=version,
        updated_at=datetime.now(UTC),
    )


@dataclass
class Pending:
    """A version taken by a writer that has not written it yet."""

    version: int
    devices: tuple[DeviceEntry, ...]


@dataclass
class ControlPlaneDouble:
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    settings_version: int = 0
    taken: int = 0  # the last version handed out
    writes: dict[int, tuple[DeviceEntry, ...]] = field(default_factory=dict)
    abandoned: set[int] = field(default_factory=set)
    revoked: bool = False
    events_status: int = 202
    delta_gone: bool = False
    answer_keepalives: bool = True  # False: keepalives are accepted, never answered
    # While set, every HTTP call hangs until ``thaw_http`` (a frozen control plane; the
    # held calls are then answered, as a process resumed after SIGSTOP answers them).
    http_frozen: asyncio.Event | None = None
    # Something in the path answers every call with this status and no mark (a WAF).
    refuse_unmarked: int | None = None
    # The handshake's 401 loses the control plane's mark (API Gateway may drop it).
    ws_refusal_marked: bool = True
    # The control plane's signing key (the node pins ``signer.public``).
    signer: LocalSigner = field(default_factory=LocalSigner.generate)
    # A man in the middle: every push is altered (one payload byte) after it was signed.
    tamper_pushes: bool = False
    # What the node did.
    requests: list[str] = field(default_factory=list)
    delta_calls: list[int] = field(default_factory=list)
    batches: list[AccessEventBatch] = field(default_factory=list)
    keepalives: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    ws_connects: int = 0
    ws_headers: list[dict[str, str]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    # --- versions --------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The committed version W: every version up to it is written or abandoned."""
        w = 0
        while w + 1 in self.writes or w + 1 in self.abandoned:
            w += 1
        return w

    def begin(self, user: str, device_id: str, access: Access) -> Pending:
        """A writer takes the next version (nothing is written yet)."""
        self.taken += 1
        return Pending(self.taken, (entry(user, device_id, access, self.taken),))

    def write(self, pending: Pending) -> DeviceEntry:
        self.writes[pending.version] = pending.devices
        return pending.devices[0]

    def abandon(self, pending: Pending) -> None:
        """The writer died and was fenced off: the version settles with no change."""
        self.abandoned.add(pending.version)

    def set_entry(self, user: str, device_id: str, access: Access) -> DeviceEntry:
        """Change an entry at the next version, written at once (without pushing it)."""
        return self.write(self.begin(user, device_id, access))

    def current(self, until: int | None = None) -> dict[tuple[str, str], DeviceEntry]:
        """For each key the newest written entry (with a version <= ``until``)."""
        out: dict[tuple[str, str], DeviceEntry] = {}
        for version in sorted(self.writes):
            if until is None or version <= until:
                for e in self.writes[version]:
                    out[(e.user, e.device_id)] = e
        return out

    @property
    def entries(self) -> dict[tuple[str, str], DeviceEntry]:
        return self.current()

    def digest_at(self, version: int) -> str:
        settings_version = self.settings_version if self.settings_version <= version else 0
        settings = self.settings if settings_version else ClusterSettings()
        return to_hex(policy_digest(self.current(version).values(), (), settings, settings_version))

    def snapshot(self) -> PolicySnapshot:
        # Read after W was read: writes that landed meanwhile are included.
        return PolicySnapshot(
            cluster_id=CLUSTER,
            version=self.version,
            generated_at=datetime.now(UTC),
            settings=self.settings,
            settings_version=self.settings_version,
            devices=tuple(self.current().values()),
        )

    def delta(self, since: int) -> PolicyDelta:
        w = self.version
        touched = {
            (e.user, e.device_id)
            for v, written in self.writes.items()
            if since < v <= w
            for e in written
        }
        settings_changed = since < self.settings_version <= w
        return PolicyDelta(
            cluster_id=CLUSTER,
            since_version=since,
            version=w,
            generated_at=datetime.now(UTC),
            settings=self.settings if settings_changed else None,
            settings_version=self.settings_version if settings_changed else 0,
            devices=tuple(e for k, e in self.current().items() if k in touched),
        )

    def verdict(self, keepalive: GatewayKeepalive) -> str:
        if not keepalive.digest:
            return "unchecked"
        if keepalive.policy_version > self.version:
            return "diverged"  # a version that was never committed
        same = keepalive.digest == self.digest_at(keepalive.policy_version)
        return "in_sync" if same else "diverged"

    @property
    def events(self) -> list[str]:
        return [e.event_id for b in self.batches for e in b.events]

    # --- signing ----------------------------------------------------------------------------

    def sign(self, kind: Kind, version: int, payload: bytes, since: int = 0) -> SignedPayload:
        return issue(
            self.signer,
            cluster_id=CLUSTER,
            kind=kind,
            version=version,
            payload=payload,
            issued_at_ms=int(datetime.now(UTC).timestamp() * 1000),
            since_version=since,
        )

    def envelope(self, message: Any) -> str:
        """A push as the control plane sends it: the ``signed`` envelope."""
        version = 0 if isinstance(message, PushRevoked) else message.version
        signed = self.sign(Kind(message.type), version, message.model_dump_json().encode())
        envelope = signed.envelope()
        if self.tamper_pushes:
            envelope = tampered(envelope)
        return envelope.model_dump_json()

    def key_set(self) -> SignedPayload:
        key = self.signer.public
        key_set = SigningKeySet(
            cluster_id=CLUSTER,
            version=1,
            keys=(AnnouncedKey(kid=key.kid, public_key=key.spki_b64, state=AnnouncedState.ACTIVE),),
        )
        return self.sign(Kind.KEYS, 1, key_set.model_dump_json().encode())

    # --- pushes --------------------------------------------------------------------------

    async def push(self, message: Any) -> None:
        """Send a push model, signed, or a string as it is, to every open socket."""
        text = self.envelope(message) if hasattr(message, "model_dump_json") else message
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(text)

    async def push_entry(self, e: DeviceEntry) -> None:
        await self.push(PushChange(cluster_id=CLUSTER, version=e.version, devices=(e,)))

    async def push_version(self, version: int) -> None:
        """The push of one committed version: all of its changes (none if abandoned)."""
        await self.push(
            PushChange(cluster_id=CLUSTER, version=version, devices=self.writes.get(version, ()))
        )

    async def revoke(self) -> None:
        self.revoked = True
        await self.push(PushRevoked(cluster_id=CLUSTER))

    # --- HTTP ----------------------------------------------------------------------------

    def freeze_http(self) -> None:
        self.http_frozen = asyncio.Event()

    def thaw_http(self) -> None:
        frozen, self.http_frozen = self.http_frozen, None
        if frozen is not None:
            frozen.set()

    def _authorised(self, request: web.Request) -> bool:
        return (
            not self.revoked
            and request.headers.get("Authorization") == f"Bearer {CREDENTIAL}"
            and bool(request.headers.get("X-SEG-Node-Id"))
        )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        frozen = self.http_frozen
        if frozen is not None and request.path != "/ws":
            await frozen.wait()
        if self.refuse_unmarked is not None:
            return web.json_response({"message": "blocked by policy"}, status=self.refuse_unmarked)
        if not self._authorised(request):
            marked = request.path != "/ws" or self.ws_refusal_marked
            headers = {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE} if marked else {}
            return web.json_response({"detail": "bad credential"}, status=401, headers=headers)
        return await handler(request)

    async def _policy(self, request: web.Request) -> web.Response:
        version = self.version
        etag = f'"{CLUSTER}-{version}"'
        if request.headers.get("If-None-Match") == etag:
            confirm = self.sign(Kind.CONFIRM, version, b"")
            return web.Response(status=304, headers={"ETag": etag, **confirm.headers()})
        signed = self.sign(Kind.SNAPSHOT, version, self.snapshot().model_dump_json().encode())
        return web.Response(
            body=signed.payload,
            content_type="application/json",
            headers={"ETag": etag, **signed.headers()},
        )

    async def _signing_keys(self, request: web.Request) -> web.Response:
        signed = self.key_set()
        return web.Response(
            body=signed.payload, content_type="application/json", headers=signed.headers()
        )

    async def _delta(self, request: web.Request) -> web.Response:
        since = int(request.query["since"])
        self.delta_calls.append(since)
        if self.delta_gone:
            return web.json_response({"detail": "gone"}, status=410)
        delta = self.delta(since)
        signed = self.sign(
            Kind.DELTA, delta.version, delta.model_dump_json().encode(), delta.since_version
        )
        return web.Response(
            body=signed.payload, content_type="application/json", headers=signed.headers()
        )

    async def _events(self, request: web.Request) -> web.Response:
        if self.events_status != 202:
            return web.json_response({"detail": "unavailable"}, status=self.events_status)
        batch = AccessEventBatch.model_validate_json(await request.read())
        self.batches.append(batch)
        return web.json_response({"accepted": len(batch.events)}, status=202)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.ws_headers.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connects += 1
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.keepalives.append(data)
                if not self.answer_keepalives:
                    continue
                keepalive = GatewayKeepalive.model_validate(data)
                verdict = self.verdict(keepalive)
                self.verdicts.append(verdict)
                pong = PushPong(
                    cluster_id=CLUSTER,
                    version=self.version,
                    server_time=datetime.now(UTC),
                    digest_check=verdict,  # type: ignore[arg-type]
                    checked_version=keepalive.policy_version,
                )
                await ws.send_str(self.envelope(pong))
        self.sockets.remove(ws)
        return ws

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/gateway/v1/policy", self._policy)
        app.router.add_get("/gateway/v1/policy/delta", self._delta)
        app.router.add_get("/gateway/v1/signing-keys", self._signing_keys)
        app.router.add_post("/gateway/v1/access-events", self._events)
        app.router.add_get("/ws", self._ws)
        # A short shutdown: open keep-alive or WebSocket connections must not hold a
        # test's teardown for aiohttp's default minute.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def tampered(envelope: SignedMessage) -> SignedMessage:
    """The envelope with one byte of its payload changed after signing (an access turned
    around where there is one, else a version digit)."""
    payload = envelope.payload
    for old, new in (('"block"', '"allow"'), ('"allow"', '"block"')):
        if old in payload:
            return envelope.model_copy(update={"payload": payload.replace(old, new, 1)})
    at = next(i for i, c in enumerate(payload) if c.isdigit())
    digit = str((int(payload[at]) + 1) % 10)
    return envelope.model_copy(update={"payload": payload[:at] + digit + payload[at + 1 :]})


async def eventually(predicate: Any, timeout: float = 5.0, what: str = "") -> None:
    """Wait until ``predicate()`` is true (polling every 20 ms)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not predicate():
        if loop.time() > until:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)
