"""Revocation of held Pings: time from applying a block to the held request's end.

Set-up on 127.0.0.1 (plain HTTP on both legs): an upstream that holds every Ping until
the end of the run; one gateway worker (this process, uvloop) whose ``PolicyStore`` is
followed by the server exactly as a node's worker follows its replica
(``agent.revocation.follow_policy``); N devices (one user each, Basic auth, EAS 14.1)
each holding one Ping from a client process of their own. Once all N are held, the
devices are blocked by pushes of ``--batch`` devices each (100: a ``PushChange``'s
bound), one push every ``--gap-ms``; every held Ping must end with its blocked answer
(HTTP 200, WBXML status 129).

With ``--replace``, first a whole policy is swapped in as a worker swaps in a
replacement (``PolicyStore.install``: every held request is decided again), that
allows every device but the last: the longest the event loop went without a turn
meanwhile (a 1 ms timer's worst lateness), and the time until the last device's Ping
ended with its blocked answer.

Prints: Pings held and answered (with status 129), the time from each push's apply
(just before ``PolicyStore.apply_push``) to the client reading the end of that device's
answer, p50 / p99 / max over all devices, and the CPU time of one apply (the push plus
the re-decisions and answers it causes). Both processes read ``time.monotonic()``
(CLOCK_MONOTONIC is one clock for the whole machine).

Reproduce: .venv/bin/python bench/revocation.py [--pings 1000] [--batch 100] [--gap-ms 50]
           [--replace]
Smoke run: .venv/bin/python bench/revocation.py --pings 200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import statistics
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.revocation import follow_policy
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy import ProxySettings, Upstream, start_eas_server
from onprem_gateway.proxy.settings import Limits
from seg_contract import (
    Access,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicySnapshot,
    PushChange,
)

NOW = datetime.now(UTC)


def snapshot(version: int, count: int, blocked: int = -1) -> PolicySnapshot:
    return PolicySnapshot(
        cluster_id="bench",
        version=version,
        generated_at=NOW,
        settings=ClusterSettings(),
        devices=tuple(
            entry(i, Access.BLOCK if i == blocked else Access.ALLOW, version) for i in range(count)
        ),
    )


async def loop_lateness(stop: asyncio.Event, worst: list[float]) -> None:
    """The worst lateness of a 1 ms timer until ``stop``: the loop's longest stall."""
    while not stop.is_set():
        due = time.monotonic() + 0.001
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], time.monotonic() - due)


def entry(i: int, access: Access, version: int) -> DeviceEntry:
    return DeviceEntry(
        user=f"user{i}",
        device_id=f"dev{i}",
        access=access,
        reason="bench",
        source=EntrySource.COMPLIANCE,
        version=version,
        updated_at=NOW,
    )


def ping_request(i: int) -> bytes:
    auth = base64.b64encode(f"user{i}:pw".encode()).decode()
    return (
        f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=DEV{i}&DeviceType=iPhone "
        f"HTTP/1.1\r\nHost: bench\r\nMS-ASProtocolVersion: 14.1\r\nAuthorization: Basic {auth}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# --- the client process ---------------------------------------------------------------------


async def _clients(port: int, count: int, pipe: Connection) -> None:
    ends: dict[int, tuple[float, bool]] = {}

    async def one(i: int, opened: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(ping_request(i))
        await writer.drain()
        opened.set()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        ends[i] = (time.monotonic(), head.startswith(b"HTTP/1.1 200") and b"129" in body)
        writer.close()

    tasks = []
    for i in range(count):
        opened = asyncio.Event()
        tasks.append(asyncio.create_task(one(i, opened)))
        await opened.wait()  # one at a time: the gateway's accept queue stays short
    pipe.send("sent")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = sum(1 for r in results if isinstance(r, BaseException))
    pipe.send((ends, failures))


def client_main(port: int, count: int, pipe: Connection) -> None:
    uvloop.run(_clients(port, count, pipe))


# --- the gateway process ---------------------------------------------------------------------


class HoldingUpstream(asyncio.Protocol):
    """Reads requests and never answers (a mail server holding Pings)."""

    held = 0

    def data_received(self, data: bytes) -> None:
        HoldingUpstream.held += data.count(b"\r\n\r\n")


class ListSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(HoldingUpstream, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    count = args.pings
    store = PolicyStore()
    store.apply_snapshot(snapshot(1, count), time.time())
    settings = ProxySettings(
        upstream=Upstream(url=f"http://127.0.0.1:{upstream_port}", allow_plain_http=True),
        public_url="https://bench.example",
        # Every client is 127.0.0.1: no per-address cap.
        limits=Limits(max_connections_per_ip=0),
    )
    server = await start_eas_server(settings, store, ListSink(), port=0, tune_gc=True)
    follow_policy(store, server)

    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    client = ctx.Process(target=client_main, args=(server.port, count, theirs))
    client.start()
    await loop.run_in_executor(None, ours.recv)  # "sent"
    # Polling counters of another component: there is no event to wait on.
    while server.state.inflight_count() < count or HoldingUpstream.held < count:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    print(f"{count} Pings held through the gateway (upstream holds {HoldingUpstream.held})")

    applied_at: dict[int, float] = {}
    apply_cpu: list[float] = []
    version = 1
    pushed = count
    if args.replace:
        # As a worker swaps in a replacement: a whole new policy, every held request
        # decided again; it blocks the last device only.
        version, pushed = 2, count - 1
        index = PolicyIndex.from_snapshot(snapshot(version, count, blocked=pushed), time.time())
        stop, worst = asyncio.Event(), [0.0]
        monitor = asyncio.create_task(loop_lateness(stop, worst))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        store.install(index)
        install_ms = (time.monotonic() - started) * 1000
        applied_at[pushed] = started
        while server.metrics.revoked.get("answered", 0) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        ended_ms = (time.monotonic() - started) * 1000
        await asyncio.sleep(0.2)
        stop.set()
        await monitor
        print(
            f"replacement under {count} held Pings: install() returned after "
            f"{install_ms:.1f} ms, the blocked device's Ping ended after {ended_ms:.1f} ms, "
            f"event loop stalled at most {worst[0] * 1000:.1f} ms"
        )
        del index
    for start in range(0, pushed, args.batch):
        version += 1
        batch = range(start, min(start + args.batch, pushed))
        push = PushChange(
            cluster_id="bench",
            version=version,
            devices=tuple(entry(i, Access.BLOCK, version) for i in batch),
        )
        started, cpu = time.monotonic(), time.process_time()
        store.apply_push(push)
        apply_cpu.append(time.process_time() - cpu)
        for i in batch:
            applied_at[i] = started
        await asyncio.sleep(args.gap_ms / 1000)

    ends, failures = await loop.run_in_executor(None, ours.recv)
    client.join(10)
    latencies = sorted((ends[i][0] - applied_at[i]) * 1000 for i in ends)
    blocked = sum(1 for _, ok in ends.values() if ok)
    revoked = server.metrics.revoked
    await server.close(1.0)
    upstream.close()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(f"answered {len(ends)}/{count} (status 129: {blocked}), client failures {failures}")
    print(f"gateway revoked: {revoked}")
    if latencies:
        print(
            f"apply -> end of the held request, ms: p50 {statistics.median(latencies):.1f}  "
            f"p99 {pct(0.99):.1f}  max {latencies[-1]:.1f}  (n={len(latencies)})"
        )
    per_push = statistics.median(apply_cpu) * 1000
    print(
        f"CPU per apply (push of {args.batch} + re-decisions + answers): "
        f"median {per_push:.1f} ms over {len(apply_cpu)} pushes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--replace", action="store_true", help="first swap in a whole policy")
    args = parser.parse_args()
    if not 1 <= args.batch <= 100:
        parser.error("--batch must be 1-100 (a PushChange carries at most 100 devices)")
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
