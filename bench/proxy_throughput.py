"""Small Sync POSTs through a real gateway node vs nginx proxy_pass, plain and TLS.

Contenders, each started fresh in every round, interleaved, the order reversed every
other round (``--rounds``, >= 3 for figures):

- direct to the upstream (nginx static, 1 worker): the load generators' baseline: at the
  same open-loop rate its latency shows what the generator and the machine add;
- nginx ``proxy_pass`` with upstream keepalive (``--workers`` processes; with TLS: the
  same ECDSA certificate on its listener);
- the gateway as operators run it: ``seg-gateway run --config gateway.toml`` with
  ``--workers`` worker processes, the agent, a 10,000-device allow policy fetched from
  the control-plane stand-in (``_standin.py``) and every access event shipped to it.

Per contender: a closed-loop wrk run (``wrk -t2 -c<connections>``, the throughput) and
an open-loop run at ``--rate`` requests/s (``_loadgen.py``, latency from the intended
send time). The load cycles through the policy's devices. Every answer must be the
upstream's: wrk's run is checked with the upstream's request count and the node's
decision counters (``/metrics``), the open-loop run answer by answer; anything else
(a blocked answer is HTTP 200 too) is an error and is printed. CPU per request is the
utime + stime of every process of the contender (node: agent + workers) over the run
from /proc, divided by the answered requests; RSS is read after the run.

Reproduce: .venv/bin/python bench/proxy_throughput.py [--rounds 3] [--duration 10]
           [--connections 64] [--rate 5000] [--workers 2] [--devices 10000]
           [--legs plain,tls]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import LoadResult, Target, run_load
from _node import NodeOptions, cpu_seconds, rss_bytes, spooled_events
from _policy import sync_requests, write_snapshot, wrk_lua
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
    run_wrk,
)
from _standin import StandIn
from _summary import record
from _verify import check_counters, percentile, spread

BENCH = "proxy_throughput"


def measure(
    c: Contender,
    upstream: Upstream,
    args: argparse.Namespace,
    lua: Path,
    requests: list[bytes],
    cafile: str,
) -> dict[str, float]:
    scheme = "https" if c.tls else "http"
    url = f"{scheme}://127.0.0.1:{c.port}/"
    run_wrk(url, lua, duration=1, connections=16)  # warm-up: pools, caches (not counted)
    node = c.node
    node_before = node.settled_metrics() if node else None
    up_before = upstream.served()
    pids = c.pids()
    agent = [node.proc.pid] if node is not None and node.proc is not None else []
    cpu0, agent0 = cpu_seconds(pids), cpu_seconds(agent)
    wrk = run_wrk(url, lua, duration=args.duration, connections=args.connections)
    cpu1, agent1 = cpu_seconds(pids), cpu_seconds(agent)
    node_after = node.settled_metrics() if node else None
    check = check_counters(
        wrk.requests,
        upstream_before=up_before,
        upstream_after=upstream.served(),
        node_before=node_before,
        node_after=node_after,
        non_2xx=wrk.non_2xx,
        socket_errors=wrk.socket_errors,
    )
    row: dict[str, float] = {
        "rps": wrk.rps,
        "cpu_us": (cpu1 - cpu0) / max(1, wrk.requests) * 1e6,
        # Of it, the agent's: receiving, folding, spooling and shipping the access events.
        "agent_cpu_us": (agent1 - agent0) / max(1, wrk.requests) * 1e6,
        "closed_errors": check.errors,
    }
    if check.detail:
        print(f"    !! {c.name}, closed loop: {check.detail}")
    if args.rate > 0:
        target = Target("127.0.0.1", c.port, cafile if c.tls else "")
        cpu2 = cpu_seconds(pids)
        load: LoadResult = run_load(
            target,
            requests,
            mode="open",
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            procs=args.load_procs,
        )
        cpu3 = cpu_seconds(pids)
        row.update(
            p50=load.pct(0.50),
            p99=load.pct(0.99),
            p999=load.pct(0.999),
            max=max(load.latencies_ms, default=float("nan")),
            open_errors=load.error_count,
            open_cpu_us=(cpu3 - cpu2) / max(1, load.answered) * 1e6,
            lag_p99=percentile(load.lag_ms, 0.99),
            gen_cpu_us=load.cpu_s / max(1, load.answered) * 1e6,
            achieved=load.achieved_rps,
        )
        if load.error_count:
            print(f"    !! {c.name}, open loop: errors {load.error_text()}")
    row["rss_mib"] = rss_bytes(pids) / 2**20
    if node is not None:
        final = node.settled_metrics()
        row["node_requests"] = sum(
            v for k, v in final.items() if k.startswith("seg_gateway_requests_total{")
        )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=5000.0, help="open-loop req/s (0: none)")
    parser.add_argument("--load-procs", type=int, default=2, help="open-loop generator procs")
    parser.add_argument("--workers", type=int, default=2, help="gateway and nginx workers")
    parser.add_argument("--devices", type=int, default=10_000, help="devices in the policy")
    parser.add_argument("--legs", default="plain,tls", help="plain, tls or both")
    args = parser.parse_args()
    legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    if not legs or set(legs) - {"plain", "tls"}:
        parser.error("--legs takes plain, tls or plain,tls")
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="segbench-") as tmp:
        work = Path(tmp)
        cert = make_cert(work)
        cafile = str(cert[0])
        snapshot = write_snapshot(work / "policy.json", args.devices)
        lua = work / "load.lua"
        lua.write_text(wrk_lua(args.devices, work / "load.txt"))
        requests = sync_requests(args.devices)
        upstream = Upstream(work, cert)
        standin = StandIn(free_port(), snapshot, work / "standin.log")
        contenders: list[Contender] = []
        try:
            for leg in legs:
                tls = cert if leg == "tls" else None
                suffix = " TLS" if tls else ""
                contenders += [
                    Direct(upstream, tls is not None),
                    NginxProxy(work, upstream, args.workers, tls),
                    Gateway(
                        work,
                        "gateway" + suffix,
                        NodeOptions(
                            upstream_url=upstream.url,
                            workers=args.workers,
                            tls=tls,
                            api_url=standin.url,
                            ws_url=standin.ws_url,
                        ),
                    ),
                ]

            def measure_one(c: Contender) -> dict[str, float]:
                events_at_start = standin.stats()["events"]  # a starting node sends none
                row = measure(c, upstream, args, lua, requests, cafile)
                row["events_at_start"] = events_at_start
                return row

            def after(c: Contender, row: dict[str, float]) -> None:
                if c.node is not None:  # every request's access event reached the stand-in
                    received = standin.stats()["events"] - row["events_at_start"]
                    at_stop = spooled_events(c.node.dir / "state")
                    row["events_missing"] = row["node_requests"] - received - at_stop
                    if at_stop:
                        print(f"    !! {c.name}: {at_stop} access events spooled at shutdown")
                    if row["events_missing"] > 0:
                        print(
                            f"    !! {c.name}: {row['events_missing']:.0f} requests counted by "
                            "the node left no access event (abandoned in flight when wrk "
                            "stopped? a proxied request's event is recorded when the "
                            "upstream's answer arrives)"
                        )
                print(
                    f"  {c.name:24} {row['rps']:8.0f} req/s  {row['cpu_us']:5.0f} µs/req"
                    + (f" (agent {row['agent_cpu_us']:.0f})" if c.node is not None else "")
                    + (f"  open p99 {row['p99']:.2f} ms" if "p99" in row else ""),
                    flush=True,
                )

            results = run_rounds(contenders, args.rounds, measure_one, after)
        finally:
            standin.stop()
            upstream.stop()
        node_command = next(
            (c.command() for c in contenders if isinstance(c, Gateway) and c.command()), ""
        )
    report(args, legs, results, node_command)
    return 0


def _ratio(results: dict[str, list[dict[str, float]]], name: str, peer: str, key: str) -> str:
    pairs = zip(results[name], results[peer], strict=False)
    return spread(a[key] / b[key] for a, b in pairs if b[key]).text("{:.2f}")


def report(
    args: argparse.Namespace,
    legs: list[str],
    results: dict[str, list[dict[str, float]]],
    node_command: str,
) -> None:
    def s(name: str, key: str, fmt: str = "{:.0f}") -> str:
        return spread(row.get(key, float("nan")) for row in results[name]).text(fmt)

    print(
        f"\nSmall Sync POSTs (~300 B) over {args.devices:,} devices, {args.rounds} rounds "
        f"(median (min-max)); closed loop: wrk -t2 -c{args.connections} -d{args.duration:g}s; "
        f"open loop: {args.rate:g} req/s over {args.connections} connections"
    )
    print(
        f"{'config':24} {'req/s':>20} {'vs nginx':>16} {'CPU µs/req':>14} "
        f"{'open p50 ms':>18} {'open p99 ms':>18} {'p99.9':>7} {'max':>7} {'RSS MiB':>11} "
        f"{'errors':>7}"
    )
    for name, rows in results.items():
        peer = "nginx proxy_pass" + (" TLS" if name.endswith("TLS") else "")
        ratio = _ratio(results, name, peer, "rps") if name.startswith("gateway") else ""
        errors = sum(r.get("closed_errors", 0) + r.get("open_errors", 0) for r in rows)
        print(
            f"{name:24} {s(name, 'rps'):>20} {ratio:>16} {s(name, 'cpu_us'):>14} "
            f"{s(name, 'p50', '{:.2f}'):>18} {s(name, 'p99', '{:.2f}'):>18} "
            f"{s(name, 'p999', '{:.1f}'):>7} {s(name, 'max', '{:.1f}'):>7} "
            f"{s(name, 'rss_mib'):>11} {errors:7.0f}"
        )
    print(
        "open-loop generator (same rate everywhere): send lag p99 "
        + ", ".join(f"{n} {s(n, 'lag_p99', '{:.2f}')} ms" for n in results)
        + "; its CPU per request "
        + ", ".join(f"{s(n, 'gen_cpu_us')} µs" for n in results if n.startswith("direct"))
    )
    print(
        "of the closed loop's CPU per request, the agent's (access events: receive, fold, "
        "spool, ship): "
        + ", ".join(f"{n} {s(n, 'agent_cpu_us')} µs" for n in results if n.startswith("gateway"))
    )
    print(
        "CPU per request at the open-loop rate: "
        + ", ".join(f"{n} {s(n, 'open_cpu_us')} µs" for n in results if "direct" not in n)
    )
    for name, rows in results.items():
        if name.startswith("gateway"):
            counted = sum(r.get("node_requests", 0) for r in rows)
            missing = sum(max(0, r.get("events_missing", 0)) for r in rows)
            print(
                f"{name}: {counted:,.0f} requests counted by the node (with warm-ups); their "
                f"access events at the control-plane stand-in or in the spool at shutdown: "
                f"{counted - missing:,.0f}"
            )
    command = (
        "PYTHONPATH=$PWD .venv/bin/python bench/proxy_throughput.py "
        f"--rounds {args.rounds} --duration {args.duration:g} --connections {args.connections} "
        f"--rate {args.rate:g} --workers {args.workers} --devices {args.devices} "
        f"--legs {','.join(legs)}"
    )
    print(f"node started as: {node_command}")
    print(f"reproduce: {command}")
    for leg in legs:
        tls = " TLS" if leg == "tls" else ""
        name, peer = "gateway" + tls, "nginx proxy_pass" + tls
        if name not in results:
            continue
        record(
            BENCH,
            f"{leg}: req/s (closed loop)",
            s(name, "rps"),
            vs_nginx=_ratio(results, name, peer, "rps"),
            command=command,
        )
        record(
            BENCH,
            f"{leg}: CPU µs/request (agent+workers)",
            s(name, "cpu_us"),
            vs_nginx=f"nginx {s(peer, 'cpu_us')}",
            command=command,
        )
        if args.rate > 0:
            record(
                BENCH,
                f"{leg}: open-loop p99 ms at {args.rate:g}/s",
                s(name, "p99", "{:.2f}"),
                vs_nginx=f"nginx {s(peer, 'p99', '{:.2f}')}",
                command=command,
            )
        record(
            BENCH,
            f"{leg}: RSS MiB (agent+workers)",
            s(name, "rss_mib"),
            vs_nginx=f"nginx {s(peer, 'rss_mib')}",
            command=command,
        )


if __name__ == "__main__":
    sys.exit(main())
