"""Small Sync POSTs (300 bytes) through the gateway vs direct vs nginx proxy_pass.

Three runs of wrk (2 threads, keep-alive, --latency) on 127.0.0.1, in one go so the
figures compare (the machine's cores are shared by wrk, the upstream and the proxy):

1. direct to the upstream: nginx answering a static 200 (1 worker);
2. through nginx ``proxy_pass`` with upstream keepalive (``--workers`` processes);
3. through the gateway (``--workers`` processes sharing the port with SO_REUSEPORT,
   uvloop), deciding every request against a 10,001-entry policy and recording an
   access event for each.

Prints req/s, p50/p99 latency, the ratio of gateway to nginx throughput, and CPU per
request of each proxy (utime + stime of its processes from /proc over the run / number
of requests). ``--profile`` also runs the gateway under cProfile and prints the top
entries. Installs nginx-light and wrk with apt-get only if they are missing.

Reproduce: .venv/bin/python bench/proxy_throughput.py [--duration 10] [--connections 64]
           [--workers 2] [--profile]
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proxy_common import (
    SYNC_PATH,
    children_of,
    cpu_seconds,
    cpu_split,
    ensure_tools,
    free_port,
    proxy_block,
    run_wrk,
    start_gateway_workers,
    start_nginx,
    static_upstream_block,
    stop,
    wait_port,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="proxy worker processes")
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway run")
    parser.add_argument("--skip-direct", action="store_true")
    args = parser.parse_args()
    ensure_tools()
    results: dict[str, dict[str, float]] = {}
    cpu_us: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="segbench-") as tmp:
        work = Path(tmp)
        up_port, ngx_port, gw_port = free_port(), free_port(), free_port()
        upstream = start_nginx(work, "upstream", static_upstream_block(up_port), workers=1)
        procs = [upstream]
        try:
            wait_port(up_port)
            run = lambda port: run_wrk(  # noqa: E731
                f"http://127.0.0.1:{port}{SYNC_PATH}",
                work,
                duration=args.duration,
                connections=args.connections,
            )
            if not args.skip_direct:
                results["direct (nginx static)"] = run(up_port)

            ngx = start_nginx(work, "proxy", proxy_block(ngx_port, up_port), workers=args.workers)
            procs.append(ngx)
            wait_port(ngx_port)
            time.sleep(0.3)
            pids = [ngx.pid, *children_of(ngx.pid)]
            before = cpu_seconds(pids)
            results["nginx proxy_pass"] = res = run(ngx_port)
            cpu_us["nginx proxy_pass"] = (cpu_seconds(pids) - before) / res["requests"] * 1e6
            stop([ngx])

            prof_dir = work if args.profile else None
            gateway = start_gateway_workers(gw_port, up_port, args.workers, profile_dir=prof_dir)
            procs += gateway
            wait_port(gw_port)
            gpids = [p.pid for p in gateway]
            before = cpu_seconds(gpids)
            user0, sys0 = cpu_split(gpids)
            results["gateway"] = res = run(gw_port)
            cpu_us["gateway"] = (cpu_seconds(gpids) - before) / res["requests"] * 1e6
            user1, sys1 = cpu_split(gpids)
            split = (
                (user1 - user0) / res["requests"] * 1e6,
                (sys1 - sys0) / res["requests"] * 1e6,
            )
            stop(gateway)
        finally:
            stop(procs)

        print(f"\nSmall Sync POSTs, wrk -t2 -c{args.connections} -d{args.duration}s, 127.0.0.1")
        print(f"{'config':24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'CPU/req':>9}")
        nginx_rps = results["nginx proxy_pass"]["rps"]
        for name, res in results.items():
            ratio = res["rps"] / nginx_rps if name != "direct (nginx static)" else float("nan")
            cpu = f"{cpu_us[name]:.0f} µs" if name in cpu_us else "-"
            print(
                f"{name:24} {res['rps']:9.0f} {res['p50_ms']:8.2f} {res['p99_ms']:8.2f} "
                f"{ratio:6.2f} {cpu:>9}"
            )
            if res["non2xx"] or res["socket_errors"]:
                print(f"    non-2xx: {res['non2xx']}  socket errors: {res['socket_errors']}")
        print(
            f"gateway workers: {args.workers} (SO_REUSEPORT, uvloop); nginx workers: "
            f"{args.workers}; gateway CPU per request: {split[0]:.0f} µs user (Python + "
            f"uvloop), {split[1]:.0f} µs system (syscalls, loopback TCP)"
        )
        if args.profile:
            for prof in sorted(work.glob("worker*.prof"))[:1]:
                print(f"\ncProfile of one gateway worker ({prof.name}), top 25 by own time:")
                pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
    print(
        "reproduce: .venv/bin/python bench/proxy_throughput.py "
        f"--duration {args.duration} --connections {args.connections} --workers {args.workers}"
        + (" --profile" if args.profile else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
