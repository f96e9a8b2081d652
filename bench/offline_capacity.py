"""How long a node cut off from the control plane keeps its access events.

A node run as operators run it (``seg-gateway run``, agent + ``--workers`` workers, a
10,000-device allow policy) serves Sync traffic at ``--rate`` requests/s (open loop,
``_loadgen.py``, cycling through the devices; every answer must still be the
upstream's) while it cannot deliver its access events, so they go to its on-disk spool.
Modes (``--modes``; fresh nodes, interleaved, the order reversed every other round):

- ``cutoff``: connected to the control-plane stand-in, which is stopped once the node is
  ready (connections refused: a cut network or a control plane down);
- ``air-gapped``: ``--policy-file`` and no control plane (events stay in the spool).

Such a node *folds* its events (docs/gateway.md, "Access events"): per device, outcome
and window (``event_fold_window_s`` for allows, ``--fold-window``, an hour by default;
a minute for blocks), and spools a window's records when it ends. What a day costs is
then set by how many records a window holds, not by the request rate:

- every second the node's ``/metrics`` gives the spool's bytes and events, evictions, and
  the folded records still open (``seg_gateway_fold_open_records``) and the requests
  they stand for;
- at the end the node is stopped, which spools its open records: the spool's growth
  across the stop, divided by the records, is the bytes a folded record costs on disk;
- the spool then grows by (records per window) x (bytes per record) per window, which
  gives the hours until ``max_spool_bytes`` (256 MiB by default) evicts. The load cycles
  through all ``--devices`` within a few seconds, so a window of any length holds one
  record per device: the figure holds at 2,000 req/s as at the measured rate (folding
  makes the spool's growth independent of the rate). Also shown: how many devices a
  day fits for allows (one record per device per window) and for blocks (one record
  per device per minute, the floor).

Before folding (every event spooled, ~346 B each) the same node evicted after ~0.1 h
at 2,000 req/s. A run per mode with a small spool (``--small-spool``, off by default)
checks whether ``/readyz`` reports a spool near full or evicting (``warnings``).

Reproduce: .venv/bin/python bench/offline_capacity.py [--rounds 3] [--rate 2000]
           [--seconds 60] [--fold-window 3600] [--small-spool 0] [--modes cutoff,air-gapped]
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
from _node import GatewayNode, NodeOptions, cpu_seconds, spooled_events
from _policy import sync_requests, write_snapshot
from _proxy_common import Upstream, ensure_tools, free_port
from _standin import StandIn
from _summary import record
from _verify import round_order, spread

BENCH = "offline_capacity"
DEFAULT_SPOOL = 256 * 1024 * 1024


def spool_bytes(state_dir: Path) -> int:
    return sum(p.stat().st_size for p in (state_dir / "spool").glob("*.seg"))


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
        extra={"event_fold_window_s": args.fold_window},
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
        folding_seen: list[bool] = []

        def sample() -> None:
            while not stop.is_set():
                m = node.metrics()
                samples.append((time.time() - t0, m))
                body = node.readyz()
                said = [*body.get("reasons", []), *body.get("warnings", [])]
                readyz_seen.extend(r for r in said if r not in readyz_seen)
                folding_seen.append(bool(body.get("spool", {}).get("folding")))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = load.result()
        time.sleep(1.5)  # the last flush reaches the spool
        stop.set()
        sampler.join()
        cpu = cpu_seconds(node.pids) - cpu0
        final = node.readyz()
        before_stop = spool_bytes(node.dir / "state")
    finally:
        node.stop()
        if standin is not None:
            standin.stop()
    after_stop = spool_bytes(node.dir / "state")  # the stop spooled the open records
    requests_on_disk = spooled_events(node.dir / "state")

    def g(m: dict[str, float], name: str) -> float:
        return m.get(f"{name}{{}}", 0.0)

    evicting = [t for t, m in samples if g(m, "seg_gateway_spool_evicted_events_total") > 0]
    last = samples[-1][1]
    limit = spool_limit or DEFAULT_SPOOL
    window = float(args.fold_window)
    row["rate"] = result.answered / max(1e-9, result.wall_s)
    row["errors"] = result.error_count
    row["requests"] = result.answered
    row["folding"] = 1.0 if folding_seen and folding_seen[-1] else 0.0
    row["open_records"] = g(last, "seg_gateway_fold_open_records")
    # Records a window holds: the open table's size over the run (median after the first
    # 5 s), not at its end, which may fall just after a window closed.
    held = sorted(g(m, "seg_gateway_fold_open_records") for t, m in samples if t >= 5.0)
    row["records_per_window"] = held[len(held) // 2] if held else row["open_records"]
    row["open_events"] = g(last, "seg_gateway_fold_open_events")
    row["folded_events"] = g(last, "seg_gateway_events_folded_total")
    row["spool_bytes_run"] = before_stop  # before the stop: unfolded events, closed windows
    # With a small spool the stop's records are partly evicted: no figure from it.
    row["bytes_per_record"] = (
        (after_stop - before_stop) / max(1.0, row["open_records"])
        if spool_limit is None
        else float("nan")
    )
    row["requests_on_disk"] = requests_on_disk
    # Every request answered is on disk after the stop, each once (default spool).
    row["on_disk_share"] = requests_on_disk / max(1.0, result.answered)
    row["fold_ratio"] = row["open_events"] / max(1.0, row["open_records"])
    per_hour = row["records_per_window"] * row["bytes_per_record"] * 3600 / window
    row["mib_per_hour"] = per_hour / 2**20
    row["hours_to_limit"] = limit / per_hour if per_hour > 0 else float("nan")
    # Every device is seen within each window at 2,000 req/s too (rate x window >>
    # devices), so the records per window, and the hours, are the same.
    row["hours_at_2000"] = row["hours_to_limit"] if 2000 * window >= args.devices else float("nan")
    row["devices_per_day"] = limit / (24 * 3600 / window * row["bytes_per_record"])
    row["blocked_devices_per_day"] = limit / (24 * 60 * row["bytes_per_record"])
    row["cpu_us"] = cpu / max(1, result.answered) * 1e6
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
    parser.add_argument("--small-spool", type=int, default=0, help="bytes (0: skip)")
    parser.add_argument(
        "--fold-window", type=int, default=3600, help="event_fold_window_s (allows), 60..86400"
    )
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
                        f"  {name:32} {row['rate']:6.0f} req/s: folding "
                        f"{bool(row['folding'])}, {row['records_per_window']:.0f} records a "
                        f"window; at the end {row['open_events']:.0f} requests in "
                        f"{row['open_records']:.0f} records ({row['bytes_per_record']:.0f} "
                        f"B/record), spool +{row['mib_per_hour']:.1f} MiB/h, limit reached "
                        f"after {row['hours_to_limit']:.1f} h; requests on disk after the "
                        f"stop {row['requests_on_disk']:.0f} of {row['requests']:.0f}; "
                        f"evicted {row['evicted']:.0f}; ready at the end: "
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
        f"{args.devices:,} devices, {args.seconds:g} s per run, {args.rounds} rounds, "
        f"allows folded per {args.fold_window} s (median (min-max))"
    )
    cols = (
        ("req/s", "rate", "{:.0f}", 1.0),
        ("records/window", "records_per_window", "{:.0f}", 1.0),
        ("requests/record", "fold_ratio", "{:.1f}", 1.0),
        ("B/record", "bytes_per_record", "{:.0f}", 1.0),
        ("spool MiB/h", "mib_per_hour", "{:.1f}", 1.0),
        ("h at 2000/s", "hours_at_2000", "{:.1f}", 1.0),
        ("devices in 24 h", "devices_per_day", "{:.0f}", 1.0),
        ("blocked devs 24 h", "blocked_devices_per_day", "{:.0f}", 1.0),
        ("spooled KiB", "spool_bytes_run", "{:.0f}", 1 / 1024),
        ("on disk/answered", "on_disk_share", "{:.4f}", 1.0),
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
        f"--fold-window {args.fold_window} --modes {args.modes}"
    )
    print(f"reproduce: {command}")
    for name, rows in results.items():
        if "default spool" in name:
            record(
                BENCH,
                f"{name}: hours until the spool evicts at 2000/s (folded, goal >= 24)",
                s(rows, "hours_at_2000", "{:.1f}"),
                command=command,
            )
            record(
                BENCH,
                f"{name}: bytes per folded record",
                s(rows, "bytes_per_record"),
                command=command,
            )


if __name__ == "__main__":
    sys.exit(main())
