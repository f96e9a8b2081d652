"""Held Pings through one gateway node, and Sync latency meanwhile.

Set-up on 127.0.0.1 (plain HTTP on both legs; TLS is measured by proxy_throughput's
peers, not here): an upstream that holds every Ping until told to answer and answers
Sync at once (``--upstream-procs`` processes, SO_REUSEPORT); the gateway with
``--workers`` worker processes (SO_REUSEPORT, uvloop; the open-files limit is 20,000 per
process and a held Ping costs the gateway 2 descriptors, so 20,000 Pings need >= 3);
Ping clients in ``--client-procs`` processes, each from its own 127.0.0.x source address
so the loopback's ephemeral ports last.

Phases: Sync at ``--rate``/s (open loop) direct to the upstream, then through the idle
gateway; then N Pings are opened and held; the gateway's RSS is read; Sync again at
``--rate``/s through the gateway while the Pings are held; RSS again; then the upstream
answers every Ping and the clients count the answers.

Prints: held Pings (answered 200 / failed), gateway RSS (total and per held Ping), Sync
p50/p99 direct / through idle gateway / through gateway with N held, and the added p99.

``--tls`` puts TLS on the device leg (self-signed certificate made for the run); the
Sync load opens its keep-alive pool (32 connections) before its clock starts, so its own
TLS handshakes are not timed (opening 20,000 TLS Pings takes this Python client a while:
use ``--open-rate`` 250-300 on a busy 2-core machine).
Environment: SEG_BENCH_GC_STATS=1 prints each worker's GC pauses; SEG_BENCH_TRIM=1 calls
malloc_trim(0) in the workers before the RSS reading (shows how much of the RSS is
freed-but-kept heap).

Reproduce: .venv/bin/python bench/held_pings.py [--pings 20000] [--workers 3]
           [--rate 500] [--seconds 15] [--open-rate 500] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httptools
import uvloop
from _proxy_common import (
    ALICE,
    BODY_300,
    PING_PATH,
    SYNC_PATH,
    cpu_seconds,
    free_port,
    make_cert,
    rss_bytes,
    start_gateway_workers,
    stop,
    wait_port,
)

SYNC_REQUEST = (
    f"POST {SYNC_PATH} HTTP/1.1\r\nHost: bench\r\nMS-ASProtocolVersion: 14.1\r\n"
    f"Authorization: {ALICE}\r\n"
    f"User-Agent: Apple-iPhone/1801\r\nContent-Length: {len(BODY_300)}\r\n\r\n"
).encode() + BODY_300
PING_REQUEST = (
    f"POST {PING_PATH} HTTP/1.1\r\nHost: bench\r\nMS-ASProtocolVersion: 14.1\r\n"
    f"Authorization: {ALICE}\r\n"
    "User-Agent: Apple-iPhone/1801\r\nContent-Length: 0\r\n\r\n"
).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 2\r\n\r\nok"
)


# --- upstream: holds Pings until SIGUSR1 ------------------------------------------------


class _UpstreamConn(asyncio.Protocol):
    held: set[_UpstreamConn] = set()

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.held.discard(self)

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        if b"Cmd=Ping" in self.url:
            self.held.add(self)
        elif self.transport is not None:
            self.transport.write(ANSWER)

    def answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANSWER)


async def _serve_upstream(port: int, count_file: str) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8192)
    server = await loop.create_server(_UpstreamConn, sock=sock, backlog=8192)
    stop_event = asyncio.Event()

    def release() -> None:
        for conn in list(_UpstreamConn.held):
            conn.answer()
        _UpstreamConn.held.clear()

    loop.add_signal_handler(signal.SIGUSR1, release)
    loop.add_signal_handler(signal.SIGTERM, stop_event.set)
    print("ready", flush=True)
    while not stop_event.is_set():
        Path(count_file).write_text(str(len(_UpstreamConn.held)))  # noqa: ASYNC240 (tiny)
        try:
            await asyncio.wait_for(stop_event.wait(), 0.5)
        except TimeoutError:
            pass
    server.close()


# --- ping clients ---------------------------------------------------------------------------


def _client_ssl(cert: str) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=cert) if cert else None


async def _ping_client(
    port: int, count: int, source: str, rate: float, result_file: str, cert: str
) -> None:
    ctx = _client_ssl(cert)
    ok = failed = 0
    opened = 0
    done = asyncio.Event()
    answered = 0

    async def one() -> None:
        nonlocal ok, failed, opened, answered
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                local_addr=(source, 0),
                limit=4096,
                ssl=ctx,
                server_hostname="localhost" if ctx else None,
            )
        except OSError:
            failed += 1
        else:
            opened += 1
            try:
                writer.write(PING_REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    failed += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                failed += 1
            finally:
                writer.close()
        answered += 1
        if answered == count:
            done.set()

    tasks = []
    start = time.monotonic()
    for i in range(count):
        tasks.append(asyncio.create_task(one()))
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    print(f"sent {count}", flush=True)
    await done.wait()
    Path(result_file).write_text(f"{ok} {failed}")  # noqa: ASYNC240 (once, at the end)


# --- Sync load (open loop) ---------------------------------------------------------------------


async def sync_load(
    port: int, rate: int, seconds: float, cert: str = "", warm: int = 32
) -> tuple[list[float], int]:
    ctx = _client_ssl(cert)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None
                )
            writer.write(SYNC_REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - t0) * 1000)
            if head.startswith(b"HTTP/1.1 200"):
                idle.append((reader, writer))
            else:
                errors += 1
                writer.close()
        except (OSError, asyncio.IncompleteReadError):
            errors += 1

    # Open the keep-alive pool before the clock starts, as devices' connections exist
    # before their requests: otherwise the first requests each open a connection, and with
    # TLS the burst of handshakes (a few ms of CPU each in this Python client) queues the
    # first second's requests behind one another and the p99 measures the load generator.
    for _ in range(warm):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None
        )
        idle.append((reader, writer))

    tasks = []
    start = time.monotonic()
    total = int(rate * seconds)
    for i in range(total):
        tasks.append(asyncio.create_task(one()))
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_sync_phase(
    name: str, port: int, rate: int, seconds: float, cert: str = ""
) -> tuple[float, float]:
    lat, errors = uvloop.run(sync_load(port, rate, seconds, cert))
    p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
    print(
        f"  Sync {rate}/s {name:34} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
        f"(n={len(lat)}, errors={errors}, mean {statistics.fmean(lat) if lat else 0:.2f} ms)",
        flush=True,
    )
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=5000, help="held Pings (target 20000)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--upstream-procs", type=int, default=3)
    parser.add_argument("--client-procs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500, help="Sync requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per Sync phase")
    parser.add_argument("--open-rate", type=float, default=500.0, help="new Pings per second")
    parser.add_argument("--profile", action="store_true", help="cProfile one gateway worker")
    parser.add_argument("--tls", action="store_true", help="TLS between devices and gateway")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="segheld-") as tmp:
        work = Path(tmp)
        up_port, gw_port = free_port(), free_port()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            upstreams = []
            for k in range(args.upstream_procs):
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve-upstream",
                        str(up_port),
                        str(work / f"up{k}"),
                    ],
                    stdout=subprocess.PIPE,
                )
                procs.append(proc)
                upstreams.append(proc)
                assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
            prof_dir = work if args.profile else None
            tls = make_cert(work) if args.tls else None
            cert = str(tls[0]) if tls else ""
            gateway = start_gateway_workers(
                gw_port, up_port, args.workers, profile_dir=prof_dir, tls=tls
            )
            procs += gateway
            wait_port(gw_port)
            gpids = [p.pid for p in gateway]
            print(
                f"held Pings bench: {args.pings} Pings, gateway workers {args.workers}, "
                f"device leg {'TLS' if args.tls else 'plain HTTP'}, upstream leg plain HTTP"
            )
            _, p99_direct = run_sync_phase("direct to upstream", up_port, args.rate, args.seconds)
            _, p99_idle = run_sync_phase(
                "through gateway, nothing held", gw_port, args.rate, args.seconds, cert
            )
            rss_idle = rss_bytes(gpids)
            cpu_before = cpu_seconds(gpids)
            t_open = time.monotonic()

            clients = []
            per = args.pings // args.client_procs
            for k in range(args.client_procs):
                n = per + (1 if k < args.pings % args.client_procs else 0)
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--ping-client",
                        str(gw_port),
                        str(n),
                        f"127.0.0.{2 + k}",
                        str(args.open_rate / args.client_procs),
                        str(work / f"client{k}"),
                        cert,
                    ],
                    stdout=subprocess.PIPE,
                )
                procs.append(proc)
                clients.append(proc)
            for proc in clients:
                assert proc.stdout is not None and proc.stdout.readline().startswith(b"sent")
            # Wait until the upstream holds them all (or stops growing).
            held, last, stable = 0, -1, 0
            until = time.monotonic() + 120
            while time.monotonic() < until:
                time.sleep(1.0)
                held = sum(
                    int((work / f"up{k}").read_text() or 0)
                    for k in range(args.upstream_procs)
                    if (work / f"up{k}").exists()
                )
                if held >= args.pings:
                    break
                stable = stable + 1 if held == last else 0
                if stable >= 5:
                    break
                last = held
            if os.environ.get("SEG_BENCH_TRIM"):
                rss_untrimmed = rss_bytes(gpids)
                for proc in gateway:
                    proc.send_signal(signal.SIGUSR2)
                time.sleep(1.0)
                print(f"  (RSS before malloc_trim: {rss_untrimmed / 2**20:.0f} MiB)")
            rss_held = rss_bytes(gpids)
            cpu_open = cpu_seconds(gpids) - cpu_before
            print(
                f"  opened {held} Pings in {time.monotonic() - t_open:.1f} s; gateway CPU "
                f"{cpu_open:.1f} s ({cpu_open / max(held, 1) * 1e6:.0f} µs per held Ping, "
                "accept + forward)",
                flush=True,
            )
            print(
                f"  held at the upstream: {held}; gateway RSS {rss_idle / 2**20:.0f} MiB idle, "
                f"{rss_held / 2**20:.0f} MiB with {held} held "
                f"({(rss_held - rss_idle) / max(held, 1) / 1024:.1f} KiB per held Ping)",
                flush=True,
            )
            _, p99_held = run_sync_phase(
                f"through gateway, {held} held", gw_port, args.rate, args.seconds, cert
            )
            rss_after = rss_bytes(gpids)
            for proc in upstreams:
                proc.send_signal(signal.SIGUSR1)
            ok = failed = 0
            for k, proc in enumerate(clients):
                proc.wait(120)
                a, b = (work / f"client{k}").read_text().split()
                ok, failed = ok + int(a), failed + int(b)
            print(f"  Pings answered 200: {ok}, failed: {failed}")
            print(f"  gateway RSS after the Sync phase: {rss_after / 2**20:.0f} MiB")
            print(
                f"  added Sync p99 with {held} held: {p99_held - p99_direct:.2f} ms vs direct, "
                f"{p99_held - p99_idle:.2f} ms vs the idle gateway"
            )
        finally:
            stop(procs)
        if args.profile:
            for prof in sorted(work.glob("worker*.prof"))[:1]:
                print(f"\ncProfile (CPU time) of one gateway worker ({prof.name}), top 20:")
                pstats.Stats(str(prof)).sort_stats("tottime").print_stats(20)
    print(
        "reproduce: .venv/bin/python bench/held_pings.py "
        f"--pings {args.pings} --workers {args.workers} --rate {args.rate} "
        f"--seconds {args.seconds:g} --open-rate {args.open_rate:g}"
        + (" --tls" if args.tls else "")
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-upstream":
        uvloop.run(_serve_upstream(int(sys.argv[2]), sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--ping-client":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
        uvloop.run(
            _ping_client(
                int(sys.argv[2]),
                int(sys.argv[3]),
                sys.argv[4],
                float(sys.argv[5]),
                sys.argv[6],
                sys.argv[7],
            )
        )
    else:
        sys.exit(main())
