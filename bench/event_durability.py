"""How long an access event waits before it is on the node's disk (the durability window).

Run:  .venv/bin/python bench/event_durability.py  [--workers N] [--rate R] [--seconds S]

Starts a node (air-gapped, from a policy file, plain HTTP on 127.0.0.1) with ``--workers``
EAS worker processes, sends ``--rate`` requests per second for ``--seconds`` seconds
(unknown devices: blocked, no upstream round trip), then reads the spool and prints, per
event, the time from the event's creation on the data path to the fsync of the spool
commit that holds it (p50, p99, max), and the fsync-inclusive commit time. With the
defaults (flush every 0.2 s) the bound is 2 x 0.2 s + one fsync with workers, one
interval less in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onprem_gateway.agent.node import Node
from onprem_gateway.config import load_config
from seg_contract import AccessEventBatch
from tests.container.policy import POLICY_PIN, allow_policy_file


async def serve_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(workers: int, rate: float, seconds: float, flush: float) -> None:
    upstream = await asyncio.start_server(serve_nothing, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        policy = allow_policy_file(Path(tmp) / "policy.signed", (), "bench")
        config = load_config(
            env={
                "SEG_GW_LISTEN_HOST": "127.0.0.1",
                "SEG_GW_LISTEN_PORT": "0",
                "SEG_GW_LISTEN_PLAIN_HTTP": "true",
                "SEG_GW_UPSTREAM_URL": f"http://127.0.0.1:{port}",
                "SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP": "true",
                "SEG_GW_POLICY_FILE": str(policy),
                "SEG_GW_POLICY_SIGNING_KEYS": POLICY_PIN,
                "SEG_GW_STATE_DIR": str(Path(tmp) / "state"),
                "SEG_GW_ADMIN_HOST": "127.0.0.1",
                "SEG_GW_ADMIN_PORT": "0",
                "SEG_GW_WORKERS": str(workers),
                "SEG_GW_EVENT_FLUSH_INTERVAL_S": str(flush),
                "SEG_GW_LOG_LEVEL": "WARNING",
                "SEG_GW_SHUTDOWN_GRACE_S": "1",
            }
        )
        node = Node(config)
        await node.start()
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                url = f"http://127.0.0.1:{node.listen_port}/Microsoft-Server-ActiveSync"
                started = time.monotonic()
                n = 0
                while time.monotonic() - started < seconds:
                    params = {"Cmd": "Sync", "User": f"u{n}", "DeviceId": f"D{n}"}
                    await client.post(
                        url,
                        params=params,
                        headers={"MS-ASProtocolVersion": "14.1"},
                        auth=(f"u{n}", "x"),
                    )
                    n += 1
                    await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            await asyncio.sleep(4 * flush + 0.5)
            delays: list[float] = []
            spool = node.reporter.spool
            for segment in spool._segments:
                data = segment.path.read_bytes()
                for (offset, length), appended in zip(
                    segment.records, segment.appended_at, strict=True
                ):
                    batch = AccessEventBatch.model_validate_json(data[offset : offset + length])
                    delays += [appended - e.at.timestamp() for e in batch.events]
        finally:
            with contextlib.suppress(Exception):
                await node.shutdown()
            upstream.close()
    mode = f"{workers} worker(s)" if workers else "in-process"
    print(f"{mode}, flush every {flush:g} s, {n} requests at {rate:g}/s -> {len(delays)} events")
    if delays:
        print(
            "event created -> on disk (fsynced): "
            f"p50 {statistics.median(delays) * 1000:.0f} ms, "
            f"p99 {percentile(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--flush", type=float, default=0.2)
    args = parser.parse_args()
    asyncio.run(run(args.workers, args.rate, args.seconds, args.flush))


if __name__ == "__main__":
    main()
