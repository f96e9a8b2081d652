"""One connection, one request at a time: latency p50 / p99 of a real gateway node vs nginx.

What a single device (or a quiet node) sees: no queueing, so every stall of the node's
event loop shows in the tail. Contenders (fresh in every round, interleaved, the order
reversed every other round): direct to the upstream (the generator's floor), nginx
``proxy_pass`` with upstream keepalive, and the gateway as operators run it
(``seg-gateway run``, agent + ``--workers`` workers, a 10,000-device allow policy from
the control-plane stand-in, access events shipped to it) once per access-event flush
interval in ``--flush-intervals`` (the node's ``event_flush_interval_s``; the default
0.2 s first): if the flush stalls requests, the tail moves with the interval.

Each run sends small Sync POSTs back to back on one keep-alive connection for
``--duration`` seconds (``_loadgen.py`` serial mode; every answer must be the
upstream's, anything else is counted as an error).

Reproduce: .venv/bin/python bench/serial_latency.py [--rounds 3] [--duration 15]
           [--flush-intervals 0.2,0.05] [--workers 2] [--devices 10000] [--tls]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import Target, run_load
from _node import NodeOptions, cpu_seconds
from _policy import sync_requests, write_snapshot
from _proxy_common import (
    Contender,
    Direct,
    Gateway,
    NginxProxy,
    Upstream,
    ensure_tools,
    free_port,
    make_cert,
    run_rounds,
)
from _standin import StandIn
from _summary import record
from _verify import spread

BENCH = "serial_latency"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--flush-intervals", default="0.2,0.05", help="gateway configs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--tls", action="store_true", help="TLS on the device leg")
    args = parser.parse_args()
    try:
        flushes = [float(x) for x in args.flush_intervals.split(",") if x.strip()]
    except ValueError:
        parser.error("--flush-intervals takes numbers, e.g. 0.2,0.05")
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="segserial-") as tmp:
        work = Path(tmp)
        cert = make_cert(work)
        tls = cert if args.tls else None
        snapshot = write_snapshot(work / "policy.json", args.devices)
        requests = sync_requests(args.devices)
        upstream = Upstream(work, cert)
        standin = StandIn(free_port(), snapshot, work / "standin.log")
        contenders: list[Contender] = [
            Direct(upstream, args.tls),
            NginxProxy(work, upstream, args.workers, tls),
        ]
        for flush in flushes:
            options = NodeOptions(
                upstream_url=upstream.url,
                workers=args.workers,
                tls=tls,
                api_url=standin.url,
                ws_url=standin.ws_url,
                event_flush_interval_s=flush,
            )
            contenders.append(Gateway(work, f"gateway, flush {flush:g} s", options))

        def measure(c: Contender) -> dict[str, float]:
            target = Target("127.0.0.1", c.port, str(cert[0]) if c.tls else "")
            run_load(target, requests, mode="serial", duration=1.0)  # warm-up
            pids = c.pids()
            cpu0 = cpu_seconds(pids)
            load = run_load(target, requests, mode="serial", duration=args.duration)
            cpu = cpu_seconds(pids) - cpu0
            lat = load.latencies_ms
            print(
                f"  {c.name:28} n={load.answered:6d}  p50 {load.pct(0.5):.3f} ms  "
                f"p99 {load.pct(0.99):.3f} ms  max {max(lat, default=0):.1f} ms  "
                f"errors {load.error_text()}",
                flush=True,
            )
            return {
                "n": load.answered,
                "p50": load.pct(0.50),
                "p99": load.pct(0.99),
                "p999": load.pct(0.999),
                "max": max(lat, default=float("nan")),
                "over_1ms": sum(1 for x in lat if x > 1.0) / max(1, len(lat)) * 100,
                "errors": load.error_count,
                "cpu_us": cpu / max(1, load.answered) * 1e6,
            }

        try:
            results = run_rounds(contenders, args.rounds, measure)
        finally:
            standin.stop()
            upstream.stop()
        node_command = "; ".join(c.command() for c in contenders if c.command())
    report(args, results, node_command)
    return 0


def report(
    args: argparse.Namespace, results: dict[str, list[dict[str, float]]], node_command: str
) -> None:
    def s(name: str, key: str, fmt: str = "{:.2f}") -> str:
        return spread(row[key] for row in results[name]).text(fmt)

    leg = "TLS" if args.tls else "plain"
    print(
        f"\nOne connection, serial Sync POSTs, {leg}, {args.duration:g} s per run, "
        f"{args.rounds} rounds (median (min-max))"
    )
    print(
        f"{'config':28} {'requests':>8} {'p50 ms':>18} {'p99 ms':>18} {'p99.9 ms':>18} "
        f"{'max ms':>16} {'% > 1 ms':>14} {'CPU µs/req':>12} {'errors':>6}"
    )
    for name, rows in results.items():
        print(
            f"{name:28} {s(name, 'n', '{:.0f}'):>8} {s(name, 'p50', '{:.3f}'):>18} "
            f"{s(name, 'p99', '{:.3f}'):>18} {s(name, 'p999', '{:.2f}'):>18} "
            f"{s(name, 'max', '{:.1f}'):>16} {s(name, 'over_1ms', '{:.2f}'):>14} "
            f"{s(name, 'cpu_us', '{:.0f}'):>12} {sum(r['errors'] for r in rows):6.0f}"
        )
    command = (
        "PYTHONPATH=$PWD .venv/bin/python bench/serial_latency.py "
        f"--rounds {args.rounds} --duration {args.duration:g} "
        f"--flush-intervals {args.flush_intervals} --workers {args.workers} "
        f"--devices {args.devices}" + (" --tls" if args.tls else "")
    )
    print(f"node started as: {node_command}")
    print(f"reproduce: {command}")
    peer = "nginx proxy_pass" + (" TLS" if args.tls else "")
    for name in results:
        if name.startswith("gateway"):
            record(
                BENCH,
                f"{leg}: p99 ms, {name}",
                s(name, "p99", "{:.2f}"),
                vs_nginx=f"nginx {s(peer, 'p99', '{:.2f}')}",
                command=command,
            )


if __name__ == "__main__":
    sys.exit(main())
