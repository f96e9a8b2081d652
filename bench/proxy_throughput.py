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
of requests). ``--tls`` adds the same pair with TLS on the device leg (a self-signed
certificate made for the run; nginx with ``ssl`` on its listener and the same
certificate: the fair peer of a gateway terminating TLS); ``--tls-only`` runs only those.
``--profile`` also runs the gateway (the TLS one with ``--tls``) under cProfile and
prints the top entries. Installs nginx-light and wrk with apt-get only if they are missing.

Reproduce: .venv/bin/python bench/proxy_throughput.py [--duration 10] [--connections 64]
           [--workers 2] [--profile] [--tls | --tls-only]
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
    make_cert,
    proxy_block,
    run_wrk,
    start_gateway_workers,
    start_nginx,
    static_upstream_block,
    stop,
    tls_proxy_block,
    wait_port,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="proxy worker processes")
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway run")
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also run nginx and the gateway with TLS on the device leg (same certificate)",
    )
    parser.add_argument("--tls-only", action="store_true", help="only the TLS runs")
    args = parser.parse_args()
    ensure_tools()
    results: dict[str, dict[str, float]] = {}
    cpu_us: dict[str, float] = {}
    splits: dict[str, tuple[float, float]] = {}
    with_plain = not args.tls_only
    with_tls = args.tls or args.tls_only
    with tempfile.TemporaryDirectory(prefix="segbench-") as tmp:
        work = Path(tmp)
        up_port = free_port()
        upstream = start_nginx(work, "upstream", static_upstream_block(up_port), workers=1)
        procs = [upstream]
        cert = make_cert(work) if with_tls else None

        def run(port: int, scheme: str = "http") -> dict[str, float]:
            return run_wrk(
                f"{scheme}://127.0.0.1:{port}{SYNC_PATH}",
                work,
                duration=args.duration,
                connections=args.connections,
            )

        def measure(name: str, pids: list[int], port: int, scheme: str) -> None:
            before = cpu_seconds(pids)
            user0, sys0 = cpu_split(pids)
            results[name] = res = run(port, scheme)
            cpu_us[name] = (cpu_seconds(pids) - before) / res["requests"] * 1e6
            user1, sys1 = cpu_split(pids)
            splits[name] = (
                (user1 - user0) / res["requests"] * 1e6,
                (sys1 - sys0) / res["requests"] * 1e6,
            )

        def nginx_run(name: str, block: str, port: int, scheme: str) -> None:
            ngx = start_nginx(work, "proxy-" + scheme, block, workers=args.workers)
            procs.append(ngx)
            try:
                wait_port(port)
                time.sleep(0.3)
                measure(name, [ngx.pid, *children_of(ngx.pid)], port, scheme)
            finally:
                stop([ngx])

        def gateway_run(name: str, port: int, tls: bool) -> None:
            profile = args.profile and (tls or not with_tls)
            gateway = start_gateway_workers(
                port,
                up_port,
                args.workers,
                profile_dir=work if profile else None,
                tls=cert if tls else None,
            )
            procs.extend(gateway)
            try:
                wait_port(port)
                measure(name, [p.pid for p in gateway], port, "https" if tls else "http")
            finally:
                stop(gateway)

        try:
            wait_port(up_port)
            if not args.skip_direct:
                results["direct (nginx static)"] = run(up_port)
            if with_plain:
                port = free_port()
                nginx_run("nginx proxy_pass", proxy_block(port, up_port), port, "http")
                gateway_run("gateway", free_port(), tls=False)
            if with_tls and cert is not None:
                port = free_port()
                block = tls_proxy_block(port, up_port, *cert)
                nginx_run("nginx proxy_pass TLS", block, port, "https")
                gateway_run("gateway TLS", free_port(), tls=True)
        finally:
            stop(procs)

        print(f"\nSmall Sync POSTs, wrk -t2 -c{args.connections} -d{args.duration}s, 127.0.0.1")
        print(f"{'config':24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'CPU/req':>9}")
        for name, res in results.items():
            peer = "nginx proxy_pass TLS" if "TLS" in name else "nginx proxy_pass"
            ratio = res["rps"] / results[peer]["rps"] if name in cpu_us else float("nan")
            cpu = f"{cpu_us[name]:.0f} µs" if name in cpu_us else "-"
            print(
                f"{name:24} {res['rps']:9.0f} {res['p50_ms']:8.2f} {res['p99_ms']:8.2f} "
                f"{ratio:6.2f} {cpu:>9}"
            )
            if res["non2xx"] or res["socket_errors"]:
                print(f"    non-2xx: {res['non2xx']}  socket errors: {res['socket_errors']}")
        print(
            f"gateway workers: {args.workers} (SO_REUSEPORT, uvloop); nginx workers: "
            f"{args.workers}; ratio: to nginx with the same device leg (TLS rows: nginx "
            "terminating TLS with the same certificate, keep-alive, so few handshakes)"
        )
        for name, (user, system) in splits.items():
            if name.startswith("gateway"):
                print(
                    f"{name} CPU per request: {user:.0f} µs user (Python + uvloop"
                    f"{' + OpenSSL' if 'TLS' in name else ''}), {system:.0f} µs system"
                )
        if args.profile:
            for prof in sorted(work.glob("worker*.prof"))[:1]:
                print(f"\ncProfile of one gateway worker ({prof.name}), top 25 by own time:")
                pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
    print(
        "reproduce: .venv/bin/python bench/proxy_throughput.py "
        f"--duration {args.duration} --connections {args.connections} --workers {args.workers}"
        + (" --profile" if args.profile else "")
        + (" --tls-only" if args.tls_only else " --tls" if args.tls else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
