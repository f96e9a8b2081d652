"""Held Pings through a real gateway node (TLS by default), and Sync latency meanwhile.

Set-up on 127.0.0.1: an upstream that holds every Ping until told to answer and answers
everything else at once, always with ``_verify.UPSTREAM_BODY`` (``--upstream-procs``
processes, SO_REUSEPORT); the contenders, fresh in every round, interleaved, the order
reversed every other round:

- the gateway as operators run it (``seg-gateway run``, agent + ``--workers`` workers,
  a 10,000-device allow policy from the control-plane stand-in, access events shipped
  to it; the open-files limit is 20,000 per process and a held Ping costs a worker 2
  descriptors, so 20,000 Pings need >= 3 workers, 50,000 >= 7 as the kernel spreads
  them unevenly; beyond ~28,000 Pings the proxies also run out of source ports towards
  the one upstream address unless net.ipv4.ip_local_port_range is widened: the bench
  says so before it starts);
- nginx ``proxy_pass`` with the same certificate and ``--workers`` workers (the memory
  a held connection costs a C proxy).

Phases per contender: Sync at ``--rate``/s (open loop, ``_loadgen.py``) with nothing
held; ``--pings`` Pings opened at ``--open-rate``/s from ``--client-procs`` processes
(each from its own 127.0.0.x, so the loopback's ephemeral ports last) and held; Sync
again while they are held; then the upstream answers every Ping and the clients check
each answer. Every answer (Sync and Ping) must be the upstream's; anything else is an
error.

Measured: RSS of every process of the contender (gateway: agent + workers) idle, with
the Pings held and after the Sync phase, and their PSS with the Pings held (shared pages
counted once, not once per process); CPU per opened Ping; Sync p50/p99/max idle and
during the hold; the workers' garbage-collector pauses during the hold. The node does
not expose GC pauses, so they come from a probe outside the product code: a
``sitecustomize`` on the node's PYTHONPATH that hooks ``gc.callbacks`` in the agent and
every worker (``_node.py``).

Reproduce: .venv/bin/python bench/held_pings.py [--rounds 3] [--pings 10000] [--workers 3]
           [--rate 500] [--seconds 10] [--open-rate 500] [--plain] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httptools
import uvloop
from _loadgen import Target, run_load
from _node import NodeOptions, cpu_seconds, pss_bytes, rss_bytes, tcp_sockets
from _policy import request, sync_requests, write_snapshot
from _proxy_common import (
    Contender,
    Gateway,
    NginxProxy,
    ensure_tools,
    free_port,
    make_cert,
    run_rounds,
)
from _standin import StandIn
from _summary import record
from _verify import UPSTREAM_BODY, answer_error, spread

BENCH = "held_pings"
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    + f"Content-Length: {len(UPSTREAM_BODY)}\r\n\r\n".encode()
    + UPSTREAM_BODY
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


# --- Ping clients ----------------------------------------------------------------------------


async def _ping_client(
    port: int, first: int, count: int, devices: int, source: str, rate: float, out: str, ca: str
) -> None:
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    results: dict[str, int] = defaultdict(int)
    done = asyncio.Event()
    finished = 0

    async def one(i: int) -> None:
        nonlocal finished
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                local_addr=(source, 0),
                limit=4096,
                ssl=ctx,
                server_hostname="localhost" if ctx else None,
            )
        except OSError as exc:
            results[f"connect: {type(exc).__name__}"] += 1
        else:
            try:
                writer.write(request("Ping", i % devices, body=b""))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                results[answer_error(status, body) or "ok"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                results[f"lost: {type(exc).__name__}"] += 1
            finally:
                writer.close()
        finished += 1
        if finished == count:
            done.set()

    tasks = []
    start = time.monotonic()
    for k in range(count):
        tasks.append(asyncio.create_task(one(first + k)))
        delay = start + (k + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    print("sent", flush=True)
    await done.wait()
    Path(out).write_text(json.dumps(results))  # noqa: ASYNC240 (once, at the end)


# --- one contender -----------------------------------------------------------------------------


def _held(work: Path, procs: int) -> int:
    total = 0
    for k in range(procs):
        path = work / f"up{k}"
        if path.exists():
            total += int(path.read_text() or 0)
    return total


def _sync(c: Contender, ca: str, args: argparse.Namespace, requests: list[bytes]) -> dict:
    target = Target("127.0.0.1", c.port, ca if c.tls else "")
    load = run_load(
        target,
        requests,
        mode="open",
        rate=args.rate,
        duration=args.seconds,
        connections=32,
        procs=1,
    )
    if load.error_count:
        print(f"    !! Sync errors: {load.error_text()}")
    return {
        "p50": load.pct(0.5),
        "p99": load.pct(0.99),
        "max": max(load.latencies_ms, default=float("nan")),
        "errors": load.error_count,
    }


def run_contender(
    c: Contender,
    work: Path,
    upstreams: list[subprocess.Popen[bytes]],
    args: argparse.Namespace,
    ca: str,
    requests: list[bytes],
) -> dict[str, float]:
    row: dict[str, float] = {}
    pids = c.pids()
    idle = _sync(c, ca, args, requests)
    row.update(idle_p50=idle["p50"], idle_p99=idle["p99"], idle_max=idle["max"])
    row["errors"] = idle["errors"]
    rss_idle = rss_bytes(pids)
    cpu0 = cpu_seconds(pids)
    t_open = time.time()
    row["open_window"] = t_open
    clients = []
    per = args.pings // args.client_procs
    first = 0
    for k in range(args.client_procs):
        n = per + (1 if k < args.pings % args.client_procs else 0)
        argv = [sys.executable, __file__, "--ping-client", str(c.port), str(first), str(n)]
        argv += [str(args.devices), f"127.0.0.{2 + k}", str(args.open_rate / args.client_procs)]
        argv += [str(work / f"client{k}"), ca if c.tls else ""]
        clients.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
        first += n
    try:
        for proc in clients:
            assert proc.stdout is not None
            proc.stdout.readline()
        held, last, stable = 0, -1, 0
        until = time.monotonic() + 120
        while time.monotonic() < until:
            time.sleep(1.0)
            held = _held(work, len(upstreams))
            if held >= args.pings:
                break
            stable = stable + 1 if held == last else 0
            if stable >= 5:
                break
            last = held
        row["open_s"] = time.time() - t_open
        row["held"] = held
        row["open_cpu_us"] = (cpu_seconds(pids) - cpu0) / max(1, held) * 1e6
        time.sleep(2.0)  # let the last opened settle (and the node's gauges catch up)
        rss_held = rss_bytes(pids)
        pss_held = pss_bytes(pids)
        if c.node is not None:
            row["node_held"] = c.node.metrics().get("seg_gateway_held{}", float("nan"))
        t_hold = time.time()
        during = _sync(c, ca, args, requests)
        row["hold_window"] = t_hold  # GC pauses are read for [t_hold, end of the Sync phase]
        row["hold_window_end"] = time.time()
        row.update(held_p50=during["p50"], held_p99=during["p99"], held_max=during["max"])
        row["errors"] += during["errors"]
        rss_after = rss_bytes(pids)
        row.update(
            rss_idle_mib=rss_idle / 2**20,
            rss_held_mib=rss_held / 2**20,
            pss_held_mib=pss_held / 2**20,
            rss_after_mib=rss_after / 2**20,
            kib_per_ping=(rss_held - rss_idle) / max(1, held) / 1024,
        )
        for proc in upstreams:
            proc.send_signal(signal.SIGUSR1)
        answers: dict[str, int] = defaultdict(int)
        for k, proc in enumerate(clients):
            proc.wait(180)
            for kind, n in json.loads((work / f"client{k}").read_text()).items():
                answers[kind] += n
        row["pings_ok"] = answers.pop("ok", 0)
        row["ping_errors"] = sum(answers.values())
        row["errors"] += row["ping_errors"] + max(
            0, args.pings - row["pings_ok"] - row["ping_errors"]
        )
        if answers:
            print(f"    !! Ping errors: {dict(answers)}")
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
    return row


def _wait_for_time_wait(port: int, most: int = 1_000, deadline_s: float = 70.0) -> None:
    """Wait (at most ``deadline_s``) until few connections to the upstream's ``port`` are
    in TIME_WAIT. The proxy that ran before left one per Ping it held, and each blocks
    that source port towards the same upstream: the next contender's Pings then got 503s
    (807 of nginx's 20,000 in one run), a cost of the order of the runs, not of the proxy."""
    until = time.monotonic() + deadline_s
    waiting = _time_waits(port)
    if waiting > most:
        print(f"    (waiting for {waiting:,} TIME_WAIT connections to the upstream)", flush=True)
    while waiting > most and time.monotonic() < until:
        time.sleep(2.0)
        waiting = _time_waits(port)


def _time_waits(port: int) -> int:
    """Connections in TIME_WAIT (state 06) to ``port``."""
    target = f":{port:04X}"
    return sum(1 for cols in tcp_sockets() if cols[3] == "06" and cols[2].endswith(target))


def _source_ports() -> int | None:
    """How many source ports Linux hands out per destination (None: unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return None
    return int(high) - int(low) + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pings", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--upstream-procs", type=int, default=2)
    parser.add_argument("--client-procs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500, help="Sync requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per Sync phase")
    parser.add_argument("--open-rate", type=float, default=500.0, help="new Pings per second")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--plain", action="store_true", help="plain HTTP on the device leg")
    parser.add_argument("--no-nginx", action="store_true", help="only the gateway")
    args = parser.parse_args()
    if args.client_procs > 250:
        parser.error("--client-procs: at most 250 (one 127.0.0.x source address each)")
    ports = _source_ports()
    if ports is not None and args.pings + 1_000 > ports:  # 1,000: the Syncs, a margin
        # Every held Ping holds one connection from the proxy to the one upstream
        # address; past the source-port range the proxy cannot connect and answers 503.
        print(
            f"!! {args.pings:,} Pings and the Syncs beside them need more source ports "
            f"towards the upstream than net.ipv4.ip_local_port_range gives ({ports:,}): "
            'expect 503s; widen it (sysctl -w net.ipv4.ip_local_port_range="1024 65535")',
            flush=True,
        )
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="segheld-") as tmp:
        work = Path(tmp)
        cert = make_cert(work)
        tls = None if args.plain else cert
        ca = str(cert[0])
        snapshot = write_snapshot(work / "policy.json", args.devices)
        requests = sync_requests(args.devices)
        up_port = free_port()
        upstreams: list[subprocess.Popen[bytes]] = []
        standin = StandIn(free_port(), snapshot, work / "standin.log")
        contenders: list[Contender] = []
        try:
            for k in range(args.upstream_procs):
                argv = [
                    sys.executable,
                    __file__,
                    "--serve-upstream",
                    str(up_port),
                    str(work / f"up{k}"),
                ]
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
                upstreams.append(proc)
                assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
            upstream_url = f"http://127.0.0.1:{up_port}"
            options = NodeOptions(
                upstream_url=upstream_url,
                workers=args.workers,
                tls=tls,
                api_url=standin.url,
                ws_url=standin.ws_url,
                gc_probe=True,
                # The Pings come from --client-procs addresses: the default cap of 1,000
                # connections per address and worker would refuse all beyond
                # workers x client-procs x 1,000 (nginx has no such cap here either).
                extra={"max_connections_per_ip": 0},
            )
            contenders.append(Gateway(work, "gateway" + ("" if args.plain else " TLS"), options))
            if not args.no_nginx:
                nginx = NginxProxy(work, upstream_url, args.workers, tls, connections=19_000)
                contenders.append(nginx)

            def measure(c: Contender) -> dict[str, float]:
                _wait_for_time_wait(up_port)
                return run_contender(c, work, upstreams, args, ca, requests)

            def after(c: Contender, row: dict[str, float]) -> None:
                if c.node is not None:  # GC pauses: the probe writes them at exit
                    pauses = c.node.gc_pauses()
                    opening = pauses.within("worker", row["open_window"], row["hold_window"])
                    held = pauses.within("worker", row["hold_window"], row["hold_window_end"])
                    everything = [p.seconds for p in pauses.by_role.get("worker", [])]
                    run = pauses.between("worker", row["open_window"], row["hold_window_end"])
                    slow = [p for p in run if p.seconds > 0.005]
                    row["gc_open_ms"] = max(opening, default=0.0) * 1000
                    row["gc_held_ms"] = max(held, default=0.0) * 1000
                    row["gc_over_5ms"] = len(slow)
                    row["gc_cpu_max_ms"] = max((p.cpu_seconds for p in run), default=0.0) * 1000
                    row["gc_cpu_over_5ms"] = sum(1 for p in run if p.cpu_seconds > 0.005)
                    row["gc_max_all_ms"] = max(everything, default=0.0) * 1000
                    start, end = row["open_window"], row["hold_window_end"]
                    workers = pauses.by_role.get("worker", [])
                    before = [p.seconds for p in workers if p.start < start]
                    after = [p.seconds for p in workers if p.start > end]
                    row["gc_before_ms"] = max(before, default=0.0) * 1000
                    row["gc_after_ms"] = max(after, default=0.0) * 1000
                    for gen in range(3):
                        row[f"gc_over_5ms_gen{gen}"] = sum(1 for p in slow if p.generation == gen)
                print(
                    f"  {c.name:18} held {row['held']:.0f}, RSS {row['rss_held_mib']:.0f} MiB "
                    f"({row['kib_per_ping']:.1f} KiB/Ping, PSS {row['pss_held_mib']:.0f} MiB), "
                    "Sync p99 idle "
                    f"{row['idle_p99']:.2f} ms, held {row['held_p99']:.2f} ms, "
                    f"Pings ok {row['pings_ok']:.0f}, errors {row['errors']:.0f}"
                    + (
                        f", worker GC max opening {row['gc_open_ms']:.1f} ms, held "
                        f"{row['gc_held_ms']:.1f} ms"
                        if "gc_held_ms" in row
                        else ""
                    ),
                    flush=True,
                )

            results = run_rounds(contenders, args.rounds, measure, after)
        finally:
            for proc in upstreams:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(10)
            standin.stop()
        node_command = next((c.command() for c in contenders if c.command()), "")
    report(args, results, node_command)
    return 0


def report(
    args: argparse.Namespace, results: dict[str, list[dict[str, float]]], node_command: str
) -> None:
    def s(name: str, key: str, fmt: str = "{:.0f}") -> str:
        return spread(row.get(key, float("nan")) for row in results[name]).text(fmt)

    leg = "plain" if args.plain else "TLS"
    print(
        f"\n{args.pings:,} held Pings ({leg} device leg), {args.workers} workers each, Sync at "
        f"{args.rate:g}/s for {args.seconds:g} s per phase, {args.rounds} rounds "
        "(median (min-max))"
    )
    cols = (
        ("held", "held", "{:.0f}"),
        ("RSS idle MiB", "rss_idle_mib", "{:.0f}"),
        ("RSS held MiB", "rss_held_mib", "{:.0f}"),
        ("PSS held MiB", "pss_held_mib", "{:.0f}"),
        ("KiB/Ping", "kib_per_ping", "{:.1f}"),
        ("CPU µs/open", "open_cpu_us", "{:.0f}"),
        ("Sync p99 idle", "idle_p99", "{:.2f}"),
        ("Sync p99 held", "held_p99", "{:.2f}"),
        ("Sync max held", "held_max", "{:.1f}"),
        ("GC open max ms", "gc_open_ms", "{:.1f}"),
        ("GC held max ms", "gc_held_ms", "{:.1f}"),
        ("GC > 5 ms", "gc_over_5ms", "{:.0f}"),
        ("GC CPU max ms", "gc_cpu_max_ms", "{:.1f}"),
        ("GC CPU > 5 ms", "gc_cpu_over_5ms", "{:.0f}"),
        ("of them gen 0", "gc_over_5ms_gen0", "{:.0f}"),
        ("gen 1", "gc_over_5ms_gen1", "{:.0f}"),
        ("gen 2", "gc_over_5ms_gen2", "{:.0f}"),
        ("errors", "errors", "{:.0f}"),
    )
    print(f"{'config':18} " + " ".join(f"{title:>18}" for title, _k, _f in cols))
    for name in results:
        print(f"{name:18} " + " ".join(f"{s(name, key, fmt):>18}" for _t, key, fmt in cols))
    print(
        "RSS: every process of the contender (gateway: agent + workers; nginx: master + "
        "workers); PSS: the same with each shared page counted once; GC: the gateway "
        "workers' longest pause while the Pings were opened and "
        "while they were held (with the Sync phase), and how many took > 5 ms (probe via "
        "gc.callbacks, see the module doc), by generation; GC CPU: the same passes' CPU "
        "time (wall time on a busy machine includes waiting for a core); longest over the "
        "whole run: "
        + ", ".join(
            f"{n} {s(n, 'gc_max_all_ms', '{:.1f}')} ms (before the Pings: "
            f"{s(n, 'gc_before_ms', '{:.1f}')} ms, after the hold: "
            f"{s(n, 'gc_after_ms', '{:.1f}')} ms)"
            for n in results
            if "gateway" in n
        )
    )
    command = (
        "PYTHONPATH=$PWD .venv/bin/python bench/held_pings.py "
        f"--rounds {args.rounds} --pings {args.pings} --workers {args.workers} "
        f"--rate {args.rate:g} --seconds {args.seconds:g} --open-rate {args.open_rate:g} "
        f"--devices {args.devices}"
        + (" --plain" if args.plain else "")
        + (" --no-nginx" if args.no_nginx else "")
    )
    print(f"node started as: {node_command}")
    print(f"reproduce: {command}")
    gw = "gateway" + ("" if args.plain else " TLS")
    peer = "nginx proxy_pass" + ("" if args.plain else " TLS")
    has_peer = peer in results

    def vs(key: str, fmt: str = "{:.0f}") -> str:
        return f"nginx {s(peer, key, fmt)}" if has_peer else ""

    record(
        BENCH,
        f"{args.pings} held ({leg}): RSS MiB",
        s(gw, "rss_held_mib"),
        vs_nginx=vs("rss_held_mib"),
        command=command,
    )
    record(
        BENCH,
        f"{args.pings} held ({leg}): KiB per Ping",
        s(gw, "kib_per_ping", "{:.1f}"),
        vs_nginx=vs("kib_per_ping", "{:.1f}"),
        command=command,
    )
    record(
        BENCH,
        f"Sync p99 ms idle -> held ({leg})",
        f"{s(gw, 'idle_p99', '{:.2f}')} -> {s(gw, 'held_p99', '{:.2f}')}",
        vs_nginx=vs("held_p99", "{:.2f}"),
        command=command,
    )
    record(
        BENCH,
        "worker GC pause max ms (opening / held)",
        f"{s(gw, 'gc_open_ms', '{:.1f}')} / {s(gw, 'gc_held_ms', '{:.1f}')}",
        command=command,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-upstream":
        uvloop.run(_serve_upstream(int(sys.argv[2]), sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--ping-client":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
        a = sys.argv[2:]
        uvloop.run(
            _ping_client(int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4], float(a[5]), a[6], a[7])
        )
    else:
        sys.exit(main())
