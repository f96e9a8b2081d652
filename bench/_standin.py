"""A small stand-in for the control plane's gateway routes, for the node benches.

Why not the real local control plane (``seg_local``, the one ``seg up`` runs): it is the
Lambda handlers on moto, where one access-event batch is several DynamoDB and SQS calls
at ~2-6 ms each; at the rates these benches drive (thousands of events per second) it
would fall behind, fill the node's spool and take the machine's two cores from the node
under test. The node cannot tell the difference: this serves the same routes of the
same contract (``seg_contract.http``) with the same status codes:

- ``GET /gateway/v1/policy``: the current snapshot (a signed file made by ``_policy.py``:
  its payload, signed again at each answer, as the control plane signs), ETag
  ``"<cluster>-<version>"``, 304 with a signed confirmation for a matching
  ``If-None-Match``;
- ``GET /gateway/v1/policy/delta?since=N``: an empty signed delta when N is current,
  else 410 (the node then fetches the snapshot);
- ``GET /gateway/v1/signing-keys``: the key set (the benches' one key, active);
- ``POST /gateway/v1/access-events``: 202, counting events and bytes (never parsing them
  beyond that: it costs next to nothing);
- the WebSocket (``/ws``): answers each keepalive with a signed pong of the current
  version.

Bench controls: ``POST /bench/snapshot?path=FILE`` serves another snapshot from now on,
``POST /bench/resync[?full=1]`` sends ``resync`` to every connected node,
``POST /bench/push?user=U&device_id=D[&access=block]`` pushes that entry at the next
version (served as current from then on),
``POST /bench/events?status=503`` makes the event route fail (``status=202`` restores),
``GET /bench/stats``. Run: ``python bench/_standin.py --port N --snapshot FILE``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_COUNT = re.compile(rb'"count":(\d+)')

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _node import stop_proc  # noqa: E402
from _policy import BENCH_SIGNER, read_snapshot, sign  # noqa: E402

from seg_contract import (  # noqa: E402
    Access,
    DeviceEntry,
    EntrySource,
    PolicyDelta,
    PushChange,
    PushPong,
    PushResync,
)
from seg_contract.http import (  # noqa: E402
    DELTA_PATH,
    EVENTS_PATH,
    POLICY_PATH,
    SIGNING_KEYS_PATH,
)
from seg_contract.key_ring import AnnouncedKey, AnnouncedState, SigningKeySet  # noqa: E402
from seg_contract.signing import Kind  # noqa: E402


class _State:
    def __init__(self, snapshot_path: Path) -> None:
        self.sockets: set[Any] = set()
        self.events = 0
        self.batches = 0
        self.event_bytes = 0
        self.events_status = 202
        self.fetches: list[dict[str, float]] = []
        self.load(snapshot_path)

    def load(self, path: Path) -> None:
        self.body = read_snapshot(path)
        # The header of the file is enough for the version and cluster (no full parse).
        head = json.loads(self.body[: self.body.index(b',"generated_at"')] + b"}")
        self.cluster_id, self.version = head["cluster_id"], int(head["version"])
        self.etag = f'"{self.cluster_id}-{self.version}"'


def make_app(snapshot_path: Path) -> Any:
    from aiohttp import WSMsgType, web  # noqa: PLC0415 (only the stand-in needs aiohttp)

    state = _State(snapshot_path)

    async def policy(request: web.Request) -> web.StreamResponse:
        started = time.time()
        if request.headers.get("If-None-Match") == state.etag:
            confirm = sign(Kind.CONFIRM, state.version, b"")
            return web.Response(status=304, headers={"ETag": state.etag, **confirm.headers()})
        signed = sign(Kind.SNAPSHOT, state.version, state.body)
        response = web.Response(
            body=state.body,
            content_type="application/json",
            headers={"ETag": state.etag, **signed.headers()},
        )
        await response.prepare(request)
        await response.write_eof()
        state.fetches.append({"version": state.version, "start": started, "end": time.time()})
        return response

    async def delta(request: web.Request) -> web.Response:
        if request.query.get("since") != str(state.version):
            return web.Response(status=410, text="gone")
        answer = PolicyDelta(
            cluster_id=state.cluster_id,
            since_version=state.version,
            version=state.version,
            generated_at=dt.datetime.now(dt.UTC),
        )
        body = answer.model_dump_json().encode()
        signed = sign(Kind.DELTA, state.version, body, since=state.version)
        return web.Response(body=body, content_type="application/json", headers=signed.headers())

    async def signing_keys(request: web.Request) -> web.Response:
        key = BENCH_SIGNER.public
        announced = AnnouncedKey(kid=key.kid, public_key=key.spki_b64, state=AnnouncedState.ACTIVE)
        key_set = SigningKeySet(cluster_id=state.cluster_id, version=1, keys=(announced,))
        signed = sign(Kind.KEYS, 1, key_set.model_dump_json().encode())
        return web.Response(
            body=signed.payload, content_type="application/json", headers=signed.headers()
        )

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        if state.events_status != 202:
            return web.Response(status=state.events_status, text="bench: events refused")
        state.batches += 1
        state.event_bytes += len(body)
        # Requests: one per event, and a folded event (a node that could not deliver)
        # adds the rest of its "count".
        extra = sum(int(n) - 1 for n in _COUNT.findall(body))
        state.events += body.count(b'"event_id"') + extra
        return web.Response(status=202, text='{"accepted": true}')

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        state.sockets.add(sock)
        try:
            async for msg in sock:
                if msg.type is WSMsgType.TEXT and '"keepalive"' in msg.data:
                    pong = PushPong(
                        cluster_id=state.cluster_id,
                        version=state.version,
                        server_time=dt.datetime.now(dt.UTC),
                    )
                    payload = pong.model_dump_json().encode()
                    frame = sign(Kind.PONG, state.version, payload).envelope()
                    await sock.send_str(frame.model_dump_json())
        finally:
            state.sockets.discard(sock)
        return sock

    async def bench_snapshot(request: web.Request) -> web.Response:
        state.load(Path(request.query["path"]))
        return web.json_response({"version": state.version})

    async def bench_resync(request: web.Request) -> web.Response:
        resync = PushResync(
            cluster_id=state.cluster_id,
            version=state.version,
            full=request.query.get("full") == "1",
            reason="bench",
        )
        payload = resync.model_dump_json().encode()
        message = sign(Kind.RESYNC, state.version, payload).envelope().model_dump_json()
        at = time.time()
        for sock in list(state.sockets):
            await sock.send_str(message)
        return web.json_response({"sent": len(state.sockets), "at": at})

    async def bench_push(request: web.Request) -> web.Response:
        # One device's entry as the control plane pushes a compliance change: the next
        # version, which the stand-in then serves as current (deltas, pongs).
        version = state.version + 1
        entry = DeviceEntry(
            user=request.query["user"],
            device_id=request.query["device_id"],
            access=Access(request.query.get("access", "block")),
            reason="bench push",
            source=EntrySource.COMPLIANCE,
            version=version,
            updated_at=dt.datetime.now(dt.UTC),
        )
        change = PushChange(cluster_id=state.cluster_id, version=version, devices=(entry,))
        payload = change.model_dump_json().encode()
        message = sign(Kind.CHANGE, version, payload).envelope().model_dump_json()
        state.version = version
        at = time.time()
        for sock in list(state.sockets):
            await sock.send_str(message)
        return web.json_response({"sent": len(state.sockets), "at": at, "version": version})

    async def bench_events(request: web.Request) -> web.Response:
        state.events_status = int(request.query["status"])
        return web.json_response({"status": state.events_status})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "events": state.events,
                "batches": state.batches,
                "event_bytes": state.event_bytes,
                "fetches": state.fetches,
                "websockets": len(state.sockets),
                "version": state.version,
            }
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.get(POLICY_PATH, policy),
            web.get(DELTA_PATH, delta),
            web.get(SIGNING_KEYS_PATH, signing_keys),
            web.post(EVENTS_PATH, events),
            web.get("/ws", ws),
            web.post("/bench/snapshot", bench_snapshot),
            web.post("/bench/resync", bench_resync),
            web.post("/bench/push", bench_push),
            web.post("/bench/events", bench_events),
            web.get("/bench/stats", stats),
        ]
    )
    return app


class StandIn:
    """The stand-in in a process of its own (its CPU is not the node's)."""

    def __init__(self, port: int, snapshot: Path, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--port", str(port), "--snapshot", str(snapshot)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"control-plane stand-in did not start ({log})") from None
                time.sleep(0.1)

    def _post(self, route: str, **params: str) -> dict[str, Any]:
        r = httpx.post(f"{self.url}{route}", params=params, timeout=30)
        r.raise_for_status()
        return dict(r.json())

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/bench/stats", timeout=10).json())

    def serve_snapshot(self, path: Path) -> int:
        return int(self._post("/bench/snapshot", path=str(path))["version"])

    def resync(self, full: bool = False) -> dict[str, Any]:
        return self._post("/bench/resync", full="1" if full else "0")

    def push(self, user: str, device_id: str, access: str = "block") -> dict[str, Any]:
        """Push one device's entry at the next version (served as current from then on)."""
        return self._post("/bench/push", user=user, device_id=device_id, access=access)

    def events_status(self, status: int) -> None:
        self._post("/bench/events", status=str(status))

    def stop(self) -> None:
        stop_proc(self.proc)


def main() -> None:
    from aiohttp import web  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--snapshot", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.snapshot), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
