"""Time from a compliance change posted to the control plane until EVERY node of a
two-node cluster enforces it, over a few hundred changes (target: p99 <= 1 s).

The whole system runs as ``seg up`` runs it (``seg_local.stack``: the control plane on
moto in its own process, two ``seg-gateway`` processes, the demo mail server). Each
change is a Device Services check-in that flips one enrolled device between compromised
and compliant (or, with ``--kind override``, a console block/allow); the clock starts
just before the POST and stops, per node, when the node's diagnostics endpoint answers
the new decision (each node polled concurrently, every 10 ms).

    .venv/bin/python bench/e2e_latency.py [--changes 300] [--kind checkin|override]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _summary import record

from seg_cli.demo import DemoDevice, checkin, enroll, wait_enforced
from seg_local.stack import Node, Stack, StackOptions


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _wait_all(nodes: list[Node], device: DemoDevice, access: str, start: float) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()

    def poll(node: Node) -> None:
        with httpx.Client(base_url=node.admin_url, timeout=5) as http:
            while True:
                r = http.get(
                    "/diagnostics/decision",
                    params={"user": device.user, "device_id": device.device_id},
                )
                if r.json()["access"] == access:
                    with lock:
                        times.append(time.monotonic() - start)
                    return
                if time.monotonic() - start > 30:
                    raise SystemExit(f"{node.node_id} did not enforce {access} within 30 s")
                time.sleep(0.01)

    threads = [threading.Thread(target=poll, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--kind", choices=("checkin", "override"), default="checkin")
    parser.add_argument(
        "--external-moto", action="store_true", help="run moto in a process of its own"
    )
    args = parser.parse_args()
    stack = Stack(
        StackOptions(
            state_dir=Path(tempfile.mkdtemp(prefix="seg-bench-")),
            nodes=2,
            external_moto=args.external_moto,
        )
    )
    t0 = time.monotonic()
    stack.start()
    print(f"system up in {time.monotonic() - t0:.1f} s (control plane + 2 gateway nodes)")
    try:
        device = DemoDevice("bench", "BENCHPHONE", "iPhone", "iPhone 15", "iOS 18.1")
        enroll(stack, device)
        checkin(stack, device, compromised=False)
        wait_enforced(stack.nodes, device.user, device.device_id, "allow")
        console = stack.console()
        all_nodes: list[float] = []  # per change: the slowest node
        api_times: list[float] = []
        for i in range(args.changes):
            block = i % 2 == 0
            access = "block" if block else "allow"
            start = time.monotonic()
            if args.kind == "checkin":
                checkin(stack, device, compromised=block)
            else:
                r = console.post(
                    f"/console/v1/email-devices/{device.user}/{device.device_id.lower()}/override",
                    json={"action": "block" if block else "allow", "reason": "bench"},
                )
                r.raise_for_status()
            api_times.append(time.monotonic() - start)
            all_nodes.append(max(_wait_all(stack.nodes, device, access, start)))
        console.close()
    finally:
        stack.stop()
    ms = [t * 1000 for t in all_nodes]
    api_ms = [t * 1000 for t in api_times]
    print(f"changes: {len(ms)} ({args.kind}), nodes: 2")
    print(
        f"change -> enforced on every node: p50 {statistics.median(ms):.0f} ms, "
        f"p90 {_percentile(ms, 0.90):.0f} ms, p99 {_percentile(ms, 0.99):.0f} ms, "
        f"max {max(ms):.0f} ms (target p99 <= 1000 ms: "
        f"{'met' if _percentile(ms, 0.99) <= 1000 else 'NOT met'})"
    )
    print(
        f"of which the API call itself: p50 {statistics.median(api_ms):.0f} ms, "
        f"p99 {_percentile(api_ms, 0.99):.0f} ms"
    )
    extra = " --external-moto" if args.external_moto else ""
    command = (
        f".venv/bin/python bench/e2e_latency.py --changes {args.changes} --kind {args.kind}{extra}"
    )
    print(f"reproduce: {command}")
    record(
        "e2e_latency",
        f"change -> enforced on every node, p99 ms ({args.kind})",
        f"{_percentile(ms, 0.99):.0f}",
        command=command,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
