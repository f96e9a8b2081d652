"""How long a node cut off from the control plane keeps its access events.

A node run as operators run it (``seg-gateway run``, agent + ``--workers`` workers, a
10,000-device allow policy) serves Sync traffic at ``--rate`` requests/s (open loop,
``_loadgen.py``, cycling through the devices; every answer must still be the
upstream's) while it cannot deliver its access events, so they go to its on-disk spool.
Modes (``--modes``; fresh nodes, interleaved, the order reversed every other round):

- ``cutoff``: connected to the control-plane stand-in, which is stopped once the node is
  ready (connections refused: a cut network or a control plane down);
- ``air-gapped``: ``--policy-file`` and no control plane (events stay in the spool).

Every second the node's ``/metrics`` gives the spool's bytes and events, and evictions.
From the growth (least squares after the first 5 s): bytes per event, spool growth per
hour at the measured rate and at 2,000 req/s, and the hours until the spool limit
(``max_spool_bytes``, 256 MiB by default) starts evicting unsent events. A second run
per mode with a small spool (``--small-spool``, e.g. 1 MiB) shows when eviction really
begins against that prediction, and whether ``/readyz`` says so.

Reproduce: .venv/bin/python bench/offline_capacity.py [--rounds 3] [--rate 2000]
           [--seconds 60] [--small-spool 1048576] [--modes cutoff,air-gapped]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import LoadRun, Target
from _node import GatewayNode, NodeOptions, cpu_seconds
from _policy import sync_requests, write_snapshot
from _proxy_common import Upstream, ensure_tools, free_port
from _standin import StandIn
from _summary import record
from _verify import round_order, slope, spread

BENCH = "offline_capacity"
DEFAULT_SPOOL = 256 * 1024 * 1024


def run_mode(
    work: Path,
    mode: str,
    snapshot: Path,
    upstream: Upstream,
    args: argparse.Namespace,
    requests: list[bytes],
    spool_limit: int | None,
    tag: str,
) -> dict[str, float]:
    standin = None
    if mode == "cutoff":
        standin = StandIn(free_port(), snapshot, work / f"standin-{tag}.log")
    options = NodeOptions(
        upstream_url=upstream.url,
        workers=args.workers,
        api_url=standin.url if standin else "",
        ws_url=standin.ws_url if standin else "",
        policy_file=None if standin else snapshot,
        max_spool_bytes=spool_limit,
    )
    node = GatewayNode(work, f"node-{mode}-{tag}", options)
    samples: list[tuple[float, dict[str, float]]] = []
    row: dict[str, float] = {}
    try:
        node.start(policy_version=1)
        if standin is not None:
            standin.stop()  # cut off: from now on every connection is refused
        load = LoadRun(
            Target("127.0.0.1", node.port),
            requests,
            mode="open",
            rate=args.rate,
            duration=args.seconds,
            connections=32,
            procs=1,
        )
        load.wait_ready()
        stop = threading.Event()
        t0 = time.time() + 1.0 + 0.02 * 32  # when the load's clock starts
        cpu0 = cpu_seconds(node.pids)
        readyz_seen: list[str] = []

        def sample() -> None:
            while not stop.is_set():
                m = node.metrics()
                samples.append((time.time() - t0, m))
                body = node.readyz()
                if body.get("reasons"):
                    readyz_seen.extend(r for r in body["reasons"] if r not in readyz_seen)
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = load.result()
        time.sleep(1.5)  # the last flush reaches the spool
        stop.set()
        sampler.join()
        cpu = cpu_seconds(node.pids) - cpu0
        final = node.readyz()
    finally:
        node.stop()
        if standin is not None:
            standin.stop()

    def g(m: dict[str, float], name: str) -> float:
        return m.get(f"{name}{{}}", 0.0)

    evicting = [t for t, m in samples if g(m, "seg_gateway_spool_evicted_events_total") > 0]
    until = min([args.seconds, *evicting])  # the growth before anything was evicted
    pts = [(t, g(m, "seg_gateway_spool_bytes")) for t, m in samples if 5.0 <= t <= until]
    last = samples[-1][1]
    events = g(last, "seg_gateway_spool_events") + g(last, "seg_gateway_spool_evicted_events_total")
    row["rate"] = result.answered / max(1e-9, result.wall_s)
    row["errors"] = result.error_count
    row["bytes_per_s"] = slope(pts)
    row["spool_events"] = g(last, "seg_gateway_spool_events")
    row["spool_bytes"] = g(last, "seg_gateway_spool_bytes")
    row["bytes_per_event"] = row["spool_bytes"] / max(1.0, row["spool_events"])
    row["requests"] = result.answered
    row["events_kept"] = events
    row["cpu_us"] = cpu / max(1, result.answered) * 1e6
    limit = spool_limit or DEFAULT_SPOOL
    row["predicted_eviction_s"] = limit / (row["bytes_per_event"] * row["rate"])
    row["hours_to_limit"] = row["predicted_eviction_s"] / 3600
    row["hours_at_2000"] = limit / (row["bytes_per_event"] * 2000) / 3600
    row["first_eviction_s"] = evicting[0] if evicting else float("nan")
    row["evicted"] = g(last, "seg_gateway_spool_evicted_events_total")
    row["ready_at_end"] = 1.0 if final.get("ready") else 0.0
    row["readyz_mentions_eviction"] = (
        1.0 if any("evict" in r or "spool" in r for r in readyz_seen) else 0.0
    )
    if result.error_count:
        print(f"    !! answers: {result.error_text()}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2000.0, help="Sync requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--small-spool", type=int, default=1 << 20, help="bytes (0: skip)")
    parser.add_argument("--modes", default="cutoff,air-gapped")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"cutoff", "air-gapped"}:
        parser.error("--modes takes cutoff, air-gapped or both")
    ensure_tools()
    configs = [(m, None) for m in modes]
    if args.small_spool:
        configs += [(m, args.small_spool) for m in modes]
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="segoffline-") as tmp:
        work = Path(tmp)
        snapshot = write_snapshot(work / "policy.json", args.devices)
        requests = sync_requests(args.devices)
        upstream = Upstream(work, None)
        names = {
            (f"{m}, spool {limit / 2**20:g} MiB" if limit else f"{m}, default spool"): (m, limit)
            for m, limit in configs
        }
        try:
            for r in range(args.rounds):
                order = round_order(list(names), r)
                print(f"round {r + 1}/{args.rounds}: {', '.join(order)}", flush=True)
                for name in order:
                    mode, limit = names[name]
                    row = run_mode(
                        work,
                        mode,
                        snapshot,
                        upstream,
                        args,
                        requests,
                        limit,
                        f"{r}-{len(results[name])}-{limit or 0}",
                    )
                    results[name].append(row)
                    print(
                        f"  {name:32} {row['rate']:6.0f} req/s: spool "
                        f"+{row['bytes_per_s'] / 1024:.0f} KiB/s "
                        f"({row['bytes_per_event']:.0f} B/event), limit reached after "
                        f"{row['hours_to_limit']:.2f} h; first eviction at "
                        f"{row['first_eviction_s']:.0f} s (predicted "
                        f"{row['predicted_eviction_s']:.0f} s); ready at the end: "
                        f"{bool(row['ready_at_end'])}",
                        flush=True,
                    )
        finally:
            upstream.stop()
    report(args, results)
    return 0


def report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    def s(rows: list[dict[str, float]], key: str, fmt: str = "{:.0f}", scale: float = 1.0) -> str:
        return spread(r.get(key, float("nan")) * scale for r in rows).text(fmt)

    print(
        f"\nNode cut off from its control plane, Sync at {args.rate:g} req/s over "
        f"{args.devices:,} devices, {args.seconds:g} s per run, {args.rounds} rounds "
        "(median (min-max))"
    )
    cols = (
        ("req/s", "rate", "{:.0f}", 1.0),
        ("spool MiB/h", "bytes_per_s", "{:.0f}", 3600 / 2**20),
        ("B/event", "bytes_per_event", "{:.0f}", 1.0),
        ("h to limit", "hours_to_limit", "{:.2f}", 1.0),
        ("h at 2000/s", "hours_at_2000", "{:.2f}", 1.0),
        ("eviction predicted s", "predicted_eviction_s", "{:.0f}", 1.0),
        ("eviction seen s", "first_eviction_s", "{:.0f}", 1.0),
        ("evicted", "evicted", "{:.0f}", 1.0),
        ("CPU µs/req", "cpu_us", "{:.0f}", 1.0),
        ("errors", "errors", "{:.0f}", 1.0),
    )
    print(f"{'config':32} " + " ".join(f"{t:>18}" for t, *_ in cols))
    for name, rows in results.items():
        print(f"{name:32} " + " ".join(f"{s(rows, k, f, sc):>18}" for _t, k, f, sc in cols))
    readyz = {
        name: (
            "ready" if all(r["ready_at_end"] for r in rows) else "not ready",
            "mentions the spool"
            if any(r["readyz_mentions_eviction"] for r in rows)
            else "no reason about the spool",
        )
        for name, rows in results.items()
    }
    print("/readyz at the end: " + "; ".join(f"{n}: {a}, {b}" for n, (a, b) in readyz.items()))
    command = (
        "PYTHONPATH=$PWD .venv/bin/python bench/offline_capacity.py "
        f"--rounds {args.rounds} --rate {args.rate:g} --seconds {args.seconds:g} "
        f"--workers {args.workers} --devices {args.devices} --small-spool {args.small_spool} "
        f"--modes {args.modes}"
    )
    print(f"reproduce: {command}")
    for name, rows in results.items():
        if "default spool" in name:
            record(
                BENCH,
                f"{name}: hours until the spool evicts at 2000/s",
                s(rows, "hours_at_2000", "{:.2f}"),
                command=command,
            )
            record(
                BENCH,
                f"{name}: bytes per spooled event",
                s(rows, "bytes_per_event"),
                command=command,
            )


if __name__ == "__main__":
    sys.exit(main())
