"""Instructions per proxied request, counted by valgrind: a before/after of the proxy's
code that the machine's noise cannot move.

Throughput and CPU time on this shared machine move by 10-20 % between two runs of the
same code (``proxy_throughput.py`` interleaves and repeats for that reason), which hides
a change of a few per cent in the request path. Counted instructions hardly move: the
same code, input and environment give the same count within ~0.5 % (how the event loop
batches its wake-ups still varies a little), whatever else the machine does. This bench
counts them for one or more checkouts side by side (say the main branch and a change),
so a refactoring can show what it costs.

What it runs, per checkout and leg (plain HTTP, TLS), in one process under
``valgrind --tool=callgrind`` with that checkout first on ``PYTHONPATH``: the checkout's
``start_eas_server`` on uvloop with a 1,000-device allow policy, a minimal HTTP/1.1
upstream, and one keep-alive client sending small Sync POSTs one after another; after
300 unmeasured requests, instrumentation is switched on (``callgrind_control``) for
``--requests`` requests. Every answer must be the upstream's (a block is counted as an
error and the run fails). The count covers user space only (the proxy, the client and
the upstream, uvloop, OpenSSL; not the kernel): the client and upstream are the same
for every checkout, so the difference is the proxy's. It is not the node's cost: that,
agent and access-event shipping included, is ``proxy_throughput.py``.

Reproduce: .venv/bin/python bench/request_instructions.py --trees <checkout>[,<checkout>...]
           [--rounds 3] [--requests 2000] [--legs plain,tls]
(a second checkout: ``git worktree add /tmp/before <rev>``; it uses this one's .venv)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trustme
import uvloop
from _policy import request, snapshot
from _summary import record

from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy import ProxySettings, Upstream, start_eas_server

BENCH = "request_instructions"
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WARM_UP = 300
DEVICES = 1_000
_BODY = b"\x03\x01j\x00\x00\x00E\\OK\x03xxx"
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    b"Content-Length: %d\r\n\r\n" % len(_BODY) + _BODY
)


# --- the driver: runs inside valgrind, in the checkout under test ------------------------
class _Upstream(asyncio.Protocol):
    """Answers each request (head and Content-Length body) with ``_RESPONSE``."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", self.buffer[:end])
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(_RESPONSE)


def _callgrind(switch: str) -> None:
    subprocess.run(
        ["callgrind_control", "--instr=" + switch, str(os.getpid())],
        check=True,
        capture_output=True,
    )


async def _drive(requests: int, tls: bool) -> None:
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(_Upstream, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    tls_files: dict[str, Any] = {}
    client_ssl = None
    if tls:
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        leaf = ca.issue_cert("127.0.0.1")
        work = Path(tempfile.mkdtemp())
        leaf.private_key_pem.write_to_path(str(work / "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
        tls_files = {"tls_cert": work / "cert.pem", "tls_key": work / "key.pem"}
        client_ssl = ssl.create_default_context()
        ca.configure_trust(client_ssl)
    settings = ProxySettings(
        upstream=Upstream(url=f"http://127.0.0.1:{up_port}", allow_plain_http=True),
        public_url="https://bench.example",
        public_hosts=frozenset({"bench.example"}),
        node_id="bench",
        **tls_files,
    )

    class Policy:
        index = PolicyIndex.from_snapshot(snapshot(DEVICES), confirmed_at=time.time())

        def current(self) -> PolicyIndex:
            return self.index

    class Sink:
        def record(self, event: Any) -> None:
            pass

    server = await start_eas_server(settings, Policy(), Sink(), tune_gc=True)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=client_ssl, server_hostname="127.0.0.1" if tls else None
    )
    sends = [request("Sync", i) for i in range(DEVICES)]

    async def one(i: int) -> None:
        writer.write(sends[i % DEVICES])
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        body = await reader.readexactly(int(length.group(1)) if length else 0)
        if not head.startswith(b"HTTP/1.1 200") or body != _BODY:
            raise SystemExit(f"not proxied: {head[:120]!r} {body[:120]!r}")

    for i in range(WARM_UP):
        await one(i)
    _callgrind("on")
    for i in range(requests):
        await one(i)
    _callgrind("off")
    writer.close()
    await server.close(0.5)
    upstream.close()


def driver(requests: int, tls: bool) -> None:
    uvloop.run(_drive(requests, tls))


# --- the bench: runs the driver per checkout and leg, interleaved ------------------------
def count(tree: Path, requests: int, tls: bool) -> float:
    """Instructions per request of one driver run in ``tree``."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            __file__,
            "--drive",
            str(requests),
            *(["--tls"] if tls else []),
        ]
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or collected is None:
            raise SystemExit(f"{tree}: the driver failed:\n{done.stdout}{done.stderr[-2000:]}")
    return int(collected.group(1)) / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", default=str(ROOT), help="checkouts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--legs", default="plain,tls")
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        driver(args.drive, args.tls)
        return 0
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    for tree in trees:
        if not (tree / "onprem_gateway" / "proxy").is_dir():
            print(f"{tree} is not a checkout of this project", file=sys.stderr)
            return 2
    legs = [leg.strip() for leg in args.legs.split(",")]
    if not set(legs) <= {"plain", "tls"}:
        print(f"--legs: plain and/or tls, not {args.legs!r}", file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:  # installed when missing, as nginx and wrk are
        print("installing valgrind (apt-get install -y valgrind)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "valgrind"], check=True)
    counts: dict[tuple[Path, str], list[float]] = {(t, leg): [] for t in trees for leg in legs}
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for leg in legs:
            for tree in order:
                n = count(tree, args.requests, leg == "tls")
                counts[tree, leg].append(n)
                print(f"round {r + 1}/{args.rounds} {leg:5} {tree}: {n:,.0f}", flush=True)
    print(
        f"\nInstructions per proxied Sync (user space, callgrind), {args.rounds} rounds,"
        f" {args.requests} requests each: median (min-max); ratio to the first checkout"
    )
    for leg in legs:
        first = sorted(counts[trees[0], leg])[len(counts[trees[0], leg]) // 2]
        for tree in trees:
            values = sorted(counts[tree, leg])
            median = values[len(values) // 2]
            print(
                f"  {leg:5} {tree!s:40} {median:>10,.0f} ({values[0]:,.0f}-{values[-1]:,.0f})"
                f"  {median / first:.4f}"
            )
    command = (
        ".venv/bin/python bench/request_instructions.py"
        f" --trees {args.trees} --rounds {args.rounds} --requests {args.requests}"
        f" --legs {args.legs}"
    )
    for leg in legs:
        values = sorted(counts[trees[-1], leg])
        figure = f"instructions per proxied Sync, {leg} (user space)"
        record(BENCH, figure, f"{values[len(values) // 2]:,.0f}", command=command)
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
