"""Instructions per proxied request, counted by valgrind: a before/after of the proxy's
code that the machine's noise hardly moves.

Throughput and CPU time on this shared machine move by 10-20 % between two runs of the
same code (``proxy_throughput.py`` interleaves and repeats for that reason), which hides
a change of a few per cent in the request path. Counted instructions move far less: in
one run, interleaved, the same code counts the same within ~0.3 %. Between runs on a
quiet and a loaded machine the counts of every checkout shift together by a few per cent
(the event loop wakes up more often per request), so compare checkouts within one run,
as this bench does: it counts one or more checkouts side by side (say the main branch and
a change), so a refactoring can show what it costs.

What it counts, per checkout and leg (plain HTTP, TLS): the checkout's
``start_eas_server`` on uvloop (a worker's proxy, with its ``EventBuffer`` as the
access-event sink) in one process under ``valgrind --tool=callgrind``, that checkout
first on ``PYTHONPATH``, with a 10,000-device allow policy; the upstream is the benches'
nginx (``_proxy_common.Upstream``), the load ``_loadgen``'s serial client (one
keep-alive connection, one request at a time, the same Sync requests as the other
benches), both in their own processes and so not counted. Instrumentation is switched on
(``callgrind_control``) once the client's connection is open, after an unmeasured
warm-up, and off when its run ends; the count divided by the requests answered is the
figure. Every answer must be the upstream's (``_verify.answer_error``: a blocked answer
is an error, and a run with an error fails). User space only (the proxy, uvloop, OpenSSL;
not the kernel), and the proxy's part of a node, not the node: agent and access-event
shipping are ``proxy_throughput.py``'s.

Reproduce: .venv/bin/python bench/request_instructions.py --trees <checkout>[,<checkout>...]
           [--rounds 3] [--seconds 8] [--legs plain,tls]
(a second checkout: ``git worktree add /tmp/before <rev>``; it uses this one's .venv)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from _loadgen import LoadRun, Target, run_load
from _policy import snapshot, sync_requests
from _proxy_common import Upstream, ensure_tools, make_cert
from _summary import record
from _verify import round_order, spread

from onprem_gateway.agent.event_buffer import EventBuffer
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy import ProxySettings, start_eas_server
from onprem_gateway.proxy import Upstream as UpstreamSettings

BENCH = "request_instructions"
ROOT = Path(__file__).resolve().parent.parent
DEVICES = 10_000
WARM_UP_S = 2.0


# --- the proxy under valgrind: runs in the checkout under test ----------------------------
async def _serve(upstream_port: int, cert: str, key: str) -> None:
    """The proxy until stdin closes; its port is the first line on stdout."""
    tls = {"tls_cert": Path(cert), "tls_key": Path(key)} if cert else {}
    settings = ProxySettings(
        upstream=UpstreamSettings(url=f"http://127.0.0.1:{upstream_port}", allow_plain_http=True),
        public_url="https://bench.example",
        public_hosts=frozenset({"bench.example"}),
        node_id="bench",
        **tls,  # type: ignore[arg-type]
    )
    index = PolicyIndex.from_snapshot(snapshot(DEVICES), confirmed_at=time.time())

    class Policy:
        def current(self) -> PolicyIndex:
            return index

    server = await start_eas_server(settings, Policy(), EventBuffer(), tune_gc=True)
    print(server.port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.close(0.5)


# --- the bench -----------------------------------------------------------------------------
def _callgrind(pid: int, switch: str) -> None:
    subprocess.run(
        ["callgrind_control", f"--instr={switch}", str(pid)], check=True, capture_output=True
    )


def count(
    tree: Path, tls: bool, upstream: Upstream, cert: tuple[Path, Path], seconds: float
) -> float:
    """Instructions per answered request of the proxy of ``tree``."""
    requests = sync_requests(DEVICES)
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            __file__,
            "--serve",
            str(upstream.port),
            *(map(str, cert) if tls else ("", "")),
        ]
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            proc.kill()
            raise SystemExit(f"{tree}: the proxy did not start:\n{proc.stderr.read().decode()}")
        target = Target("127.0.0.1", int(line), cafile=str(cert[0]) if tls else "")
        run_load(target, requests, mode="serial", duration=WARM_UP_S)
        load = LoadRun(target, requests, mode="serial", duration=seconds)
        load.wait_ready()
        _callgrind(proc.pid, "on")
        result = load.result()
        _callgrind(proc.pid, "off")
        proc.stdin.close()
        stderr = proc.stderr.read().decode()
        proc.wait(60)
        collected = re.search(r"Collected : (\d+)", stderr)
        if result.error_count or not result.answered or collected is None:
            raise SystemExit(f"{tree}: errors {result.error_text()}, answered {result.answered}")
    return int(collected.group(1)) / result.answered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trees", default=str(ROOT), help="checkouts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured run per count")
    parser.add_argument("--legs", default="plain,tls")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        uvloop.run(_serve(int(args.serve[0]), args.serve[1], args.serve[2]))
        return 0
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    for tree in trees:
        if not (Path(tree) / "onprem_gateway" / "proxy").is_dir():
            print(f"{tree} is not a checkout of this project", file=sys.stderr)
            return 2
    legs = [leg.strip() for leg in args.legs.split(",")]
    if not set(legs) <= {"plain", "tls"}:
        print(f"--legs: plain and/or tls, not {args.legs!r}", file=sys.stderr)
        return 2
    ensure_tools()
    if shutil.which("valgrind") is None:  # installed when missing, as nginx and wrk are
        print("installing valgrind (apt-get install -y valgrind)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "valgrind"], check=True)
    counts: dict[tuple[str, str], list[float]] = {(t, leg): [] for t in trees for leg in legs}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cert = make_cert(work)
        upstream = Upstream(work, None)
        try:
            for r in range(args.rounds):
                for leg in legs:
                    for tree in round_order(trees, r):
                        n = count(Path(tree), leg == "tls", upstream, cert, args.seconds)
                        counts[tree, leg].append(n)
                        print(f"round {r + 1}/{args.rounds} {leg:5} {tree}: {n:,.0f}", flush=True)
        finally:
            upstream.stop()
    command = (
        ".venv/bin/python bench/request_instructions.py"
        f" --trees {args.trees} --rounds {args.rounds} --seconds {args.seconds} --legs {args.legs}"
    )
    print(
        f"\nInstructions per proxied Sync (the proxy's process, user space, callgrind), "
        f"{args.rounds} rounds: median (min-max); ratio of medians to the first checkout"
    )
    for leg in legs:
        first = spread(counts[trees[0], leg]).median
        for tree in trees:
            s = spread(counts[tree, leg])
            print(f"  {leg:5} {tree:40} {s.text('{:,.0f}'):>28}  {s.median / first:.4f}")
        last = spread(counts[trees[-1], leg])
        figure = f"instructions per proxied Sync, {leg} (proxy, user space)"
        record(BENCH, figure, last.text("{:,.0f}"), command=command)
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
