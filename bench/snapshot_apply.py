"""Applying a refreshed 100,000-device policy snapshot on a running node, under probes.

Two nodes run as operators run them (``seg-gateway run``, agent + ``--workers`` workers),
each starting from the same ``--devices`` policy (version 1):

- *link*: connected to the control-plane stand-in, which then serves a new version
  (``--changes`` entries changed) and pushes ``resync``: the node asks for a delta, gets
  410 and fetches the snapshot (GET /gateway/v1/policy), parses and checks it, swaps it
  in and hands the workers the change (the path of a refresh that brings a new version);
- *link-full*: the same with ``resync`` ``full``: the node replaces its policy with a
  fresh snapshot (what it also does when its digest diverged);
- *file*: air-gapped (``--policy-file``); the file is replaced and the agent gets SIGHUP.

Rounds (``--rounds``) alternate them, the order reversed every other round; each
round applies a newer version. During each apply:

- probes through the EAS port: ``--probe-conns`` keep-alive connections, each sending a
  Sync every 5 ms (``_loadgen.py``, every answer checked); each connection is mapped to
  the worker process serving it (/proc), so a stall is attributed to its worker: the
  worst probe latency from the trigger until every worker runs the new version (+1 s)
  is that worker's event-loop stall, beside the worst before the trigger;
- ``/readyz`` polled every 10 ms (its latency is the agent's own loop stall; it also
  says when the agent and each worker run the new version);
- the GC-pause probe (``_node.py``) in the agent and the workers;
- on a connected node, as soon as the agent has the new version, the stand-in pushes a
  block of one device no probe uses (its Sync is first checked to be proxied); that
  device's Sync is then sent every 2 ms until it is answered blocked: push -> block as a
  device sees it, and whether the workers were still assembling the new policy then.

Then, in this process, the same snapshot's steps one by one (CPU time): the signature
check (SHA-256 of the payload, ECDSA), parse + validate, digest, index build, parse and
index build again with the collector paused as the node does (``agent/gc_pause.py``),
then both a slice per step as the agent's loop runs them (``core/snapshot_slices.py``,
``PolicyIndex.build_in_slices``) with the longest step, the journal record the node
writes (the signed snapshot as received), the delta the workers get.

Reproduce: .venv/bin/python bench/snapshot_apply.py [--rounds 3] [--devices 100000]
           [--changes 10] [--workers 2] [--paths link,link-full,file]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _loadgen import LoadRun, Target
from _node import GatewayNode, NodeOptions, connection_owners
from _policy import (
    BENCH_SIGNER,
    CLUSTER_ID,
    device,
    request,
    sync_requests,
    user,
    write_snapshot,
)
from _proxy_common import Upstream, ensure_tools, free_port
from _standin import StandIn
from _summary import record
from _verify import answer_error, round_order, spread

from onprem_gateway.agent.gc_pause import collector_paused
from onprem_gateway.agent.policy_store import PolicyOp, compact_op
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.snapshot_slices import parse_in_slices
from onprem_gateway.core.steps import Steps
from seg_contract import PolicySnapshot
from seg_contract.digest import policy_digest
from seg_contract.signing import Applied, Kind, Verifier, decode_record, encode_record

BENCH = "snapshot_apply"
PROBE_EVERY_S = 0.005
T = TypeVar("T")


def poll_readyz(node: GatewayNode, version: int, stop: threading.Event) -> dict[str, float]:
    """Poll /readyz every 10 ms until every worker runs ``version`` (or ``stop``)."""
    out: dict[str, float] = {"readyz_max_ms": 0.0}
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            t0 = time.time()
            try:
                body = http.get(f"{node.admin_url}/readyz").json()
            except (httpx.HTTPError, ValueError):
                body = {}
            t1 = time.time()
            out["readyz_max_ms"] = max(out["readyz_max_ms"], (t1 - t0) * 1000)
            # At or past it: a connected node is pushed the next version meanwhile.
            if body.get("policy", {}).get("version", 0) >= version and "agent" not in out:
                out["agent"] = t1
            workers = body.get("workers", [])
            if workers and all(w["policy_version"] >= version for w in workers):
                out["workers"] = t1
                out.setdefault("agent", t1)
                return out
            time.sleep(0.01)
    return out


class PushDuring(threading.Thread):
    """Once the agent has ``version``, the stand-in pushes a block of device ``index``
    (one no probe uses); then that device's Sync is sent on one keep-alive connection
    until the node answers it blocked: push -> block as a device sees it, and whether
    the workers were still assembling the new policy then (their version below it)."""

    def __init__(self, node: GatewayNode, standin: StandIn, version: int, index: int) -> None:
        super().__init__(daemon=True)
        self.node, self.standin, self.version, self.index = node, standin, version, index
        self.stop = threading.Event()
        self.result: dict[str, float] = {}

    def sync(self, conn: socket.socket) -> str | None:
        """The device's Sync, the bytes the probes send: None when proxied, else why not."""
        conn.sendall(request("Sync", self.index))
        answer = http.client.HTTPResponse(conn)
        answer.begin()
        return answer_error(answer.status, answer.read())

    def run(self) -> None:
        with httpx.Client(timeout=30) as admin:
            while not self.stop.is_set():
                try:
                    ready = admin.get(f"{self.node.admin_url}/readyz").json()
                except (httpx.HTTPError, ValueError):
                    ready = {}
                if ready.get("policy", {}).get("version", 0) >= self.version:
                    break
                time.sleep(0.005)
            else:
                return
            conn = socket.create_connection(("127.0.0.1", self.node.port), timeout=30)
            before = self.sync(conn)
            if before is not None:  # it must be proxied until the push
                self.result = {"push_error": 1.0}
                print(f"    !! the device to push was not proxied before the push: {before}")
                return
            pushed = float(self.standin.push(user(self.index), device(self.index))["at"])
            while not self.stop.is_set():
                error = self.sync(conn)
                if error is not None and error.startswith("blocked"):
                    blocked = time.time()
                    break
                time.sleep(0.002)
            else:
                return
            conn.close()
            workers = admin.get(f"{self.node.admin_url}/readyz").json().get("workers", [])
        self.result = {
            "push_block_s": blocked - pushed,
            "push_during": float(any(w["policy_version"] < self.version for w in workers)),
        }


def apply_once(
    name: str,
    node: GatewayNode,
    standin: StandIn | None,
    policy_file: Path | None,
    new_snapshot: Path,
    version: int,
    args: argparse.Namespace,
    requests: list[bytes],
) -> dict[str, float]:
    window = args.window
    probes = LoadRun(
        Target("127.0.0.1", node.port),
        requests,
        mode="open",
        rate=args.probe_conns / PROBE_EVERY_S,
        duration=window,
        connections=args.probe_conns,
        procs=1,
        timeline=True,
    )
    ports = probes.wait_ready()
    time.sleep(1.0 + 0.02 * args.probe_conns + 2.0)  # clock starts, then 2 s of baseline
    owners = connection_owners(node.worker_pids, node.port)  # accepted by now
    pusher = None
    if standin is not None:
        standin.serve_snapshot(new_snapshot)
        if args.push:
            pusher = PushDuring(node, standin, version, args.devices - version)
            pusher.start()
        trigger = float(standin.resync(full=name == "link-full")["at"])
    else:
        assert policy_file is not None and node.proc is not None
        tmp = policy_file.with_suffix(".new")
        tmp.write_bytes(new_snapshot.read_bytes())
        os.replace(tmp, policy_file)
        trigger = time.time()
        node.proc.send_signal(signal.SIGHUP)
    stop = threading.Event()
    timer = threading.Timer(window, stop.set)
    timer.start()
    seen = poll_readyz(node, version, stop)
    timer.cancel()
    load = probes.result()
    row: dict[str, float] = {"readyz_max_ms": seen["readyz_max_ms"], "errors": load.error_count}
    if pusher is not None:
        pusher.join(timeout=window)
        pusher.stop.set()
        if not pusher.result:
            print(f"    !! {name}: the pushed block was not in force within {window:g} s")
            row["errors"] += 1
        row |= pusher.result
    if "workers" not in seen:
        print(f"    !! {name}: the workers did not reach version {version} within {window:g} s")
        row["errors"] += 1
        return row
    done = seen["workers"]
    row["agent_s"] = seen["agent"] - trigger
    row["workers_s"] = done - trigger
    if standin is not None:
        fetch = [f for f in standin.stats()["fetches"] if f["version"] == version]
        if fetch:
            row["fetch_s"] = fetch[-1]["end"] - fetch[-1]["start"]
    before: dict[int, float] = defaultdict(float)
    during: dict[int, float] = defaultdict(float)
    for port, timeline in load.timelines:
        pid = owners.get(port, 0)
        for at, latency in timeline:
            if at < trigger:
                before[pid] = max(before[pid], latency)
            elif at <= done + 1.0:
                during[pid] = max(during[pid], latency)
    unmapped = [p for p in ports if p not in owners]
    row["stall_ms"] = max(during.values(), default=float("nan"))
    row["base_ms"] = max(before.values(), default=float("nan"))
    row["workers_probed"] = len({pid for pid in owners.values() if pid})
    per_worker = ", ".join(
        f"pid {pid}: {before[pid]:.1f} -> {during[pid]:.1f} ms" for pid in sorted(during)
    )
    print(
        f"  {name:9} v{version}: agent has it after {row['agent_s'] * 1000:.0f} ms, every worker "
        f"after {row['workers_s'] * 1000:.0f} ms; probe max before -> during: {per_worker}; "
        f"/readyz max {row['readyz_max_ms']:.0f} ms; probe errors {load.error_text()}"
        + (f"; {len(unmapped)} probe connections not mapped to a worker" if unmapped else ""),
        flush=True,
    )
    if node.options.gc_probe:
        row["window"] = trigger
        row["window_end"] = done + 1.0
    return row


def _timed_steps(steps: Steps[T], wall_ms: list[float]) -> T:
    """Run ``steps`` (``core.steps``), adding each step's wall ms to ``wall_ms``."""
    while True:
        t0 = time.perf_counter()
        try:
            next(steps)
        except StopIteration as done:
            wall_ms.append((time.perf_counter() - t0) * 1000)
            return done.value  # type: ignore[no-any-return]
        wall_ms.append((time.perf_counter() - t0) * 1000)


def in_process(path: Path, previous: Path) -> dict[str, float]:
    """The apply's steps in this process, CPU ms each."""
    signed, _ = decode_record(path.read_bytes())
    data, old = signed.payload, decode_record(previous.read_bytes())[0].payload
    out: dict[str, float] = {"json_mib": len(data) / 2**20}
    verifier = Verifier([BENCH_SIGNER.public])

    def timed(key: str, fn):  # type: ignore[no-untyped-def]
        t0 = time.process_time()
        value = fn()
        out[key] = (time.process_time() - t0) * 1000
        return value

    before = PolicyIndex.from_snapshot(PolicySnapshot.model_validate_json(old), time.time())
    timed(
        "verify",
        lambda: verifier.verify(
            signed,
            cluster_id=CLUSTER_ID,
            kinds=Kind.SNAPSHOT,
            applied=Applied(),
            now_ms=int(time.time() * 1000),
        ),
    )
    snap = timed("parse", lambda: PolicySnapshot.model_validate_json(data))
    with collector_paused():  # as the node parses and indexes a whole policy
        paused = timed("parse_paused", lambda: PolicySnapshot.model_validate_json(data))
        timed("index_paused", lambda: PolicyIndex.from_snapshot(paused, time.time()))
        # As the agent's loop takes a fetched snapshot: a slice per turn.
        steps_ms: list[float] = []
        sliced = timed("sliced", lambda: _timed_steps(parse_in_slices(data), steps_ms))
        timed(
            "sliced_index",
            lambda: _timed_steps(PolicyIndex.build_in_slices(sliced, time.time()), steps_ms),
        )
        out["longest_step"] = max(steps_ms)
    timed("digest", lambda: policy_digest(snap.devices, snap.credentials, snap.settings, 1))
    index = timed("index", lambda: PolicyIndex.from_snapshot(snap, time.time()))
    timed("journal", lambda: encode_record(signed))
    op = timed("delta", lambda: compact_op(PolicyOp("snapshot", snap, time.time()), before, index))
    timed("delta_lines", op.to_lines)
    # As the agent works it out: before the swap, a slice per turn.
    delta_steps: list[float] = []
    timed("sliced_delta", lambda: _timed_steps(index.changes_in_slices(before), delta_steps))
    out["longest_delta_step"] = max(delta_steps)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=10, help="entries changed per version")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--probe-conns", type=int, default=8)
    parser.add_argument("--window", type=float, default=15.0, help="max seconds per apply")
    parser.add_argument("--paths", default="link,link-full,file", help="which nodes")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"link", "link-full", "file"}:
        parser.error("--paths takes some of link, link-full, file")
    # A connected node is pushed a block of device ``devices - version`` in each round:
    # never a probe's (the probes use the first 10,000).
    args.push = args.devices - 2 * args.rounds - 2 > min(args.devices, 10_000)
    ensure_tools()
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    steps: list[dict[str, float]] = []
    gc: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="segapply-") as tmp:
        work = Path(tmp)
        first = write_snapshot(work / "v1.json", args.devices, 1, changed=0)
        requests = sync_requests(min(args.devices, 10_000))
        upstream = Upstream(work, None)
        nodes: dict[str, GatewayNode] = {}
        standins: dict[str, StandIn] = {}  # one per connected node: a resync reaches one
        try:
            started = {}
            for path in paths:
                policy_file = work / "file-node-policy.json" if path == "file" else None
                if policy_file is not None:
                    policy_file.write_bytes(first.read_bytes())
                else:
                    standins[path] = StandIn(free_port(), first, work / f"standin-{path}.log")
                standin = standins.get(path)
                options = NodeOptions(
                    upstream_url=upstream.url,
                    workers=args.workers,
                    api_url=standin.url if standin else "",
                    ws_url=standin.ws_url if standin else "",
                    policy_file=policy_file,
                    gc_probe=True,
                )
                nodes[path] = GatewayNode(work, f"node-{path}", options)
                t0 = time.monotonic()
                nodes[path].start(policy_version=1, timeout=300)
                started[path] = time.monotonic() - t0
                print(f"{path} node ready with {args.devices:,} devices in {started[path]:.1f} s")
            previous = first
            for r in range(args.rounds):
                version = 2 * r + 2  # a connected node's push takes the next one
                new = write_snapshot(
                    work / f"v{version}.json", args.devices, version, changed=args.changes
                )
                order = round_order(paths, r)
                print(
                    f"round {r + 1}/{args.rounds} (version {version}): {', '.join(order)}",
                    flush=True,
                )
                for path in order:
                    node = nodes[path]
                    row = apply_once(
                        path,
                        node,
                        standins.get(path),
                        node.options.policy_file,
                        new,
                        version,
                        args,
                        requests,
                    )
                    results[path].append(row)
                steps.append(in_process(new, previous))
                previous = new
        finally:
            for node in nodes.values():
                node.stop()
            for standin in standins.values():
                standin.stop()
            upstream.stop()
        for path, node in nodes.items():
            pauses = node.gc_pauses()
            for row in results[path]:
                if "window" in row:
                    for role in ("agent", "worker"):
                        window = pauses.within(role, row["window"], row["window_end"])
                        row[f"gc_{role}_ms"] = max(window, default=0.0) * 1000
                        gc[f"{path} {role}"].append(row[f"gc_{role}_ms"])
        command = (
            "PYTHONPATH=$PWD .venv/bin/python bench/snapshot_apply.py "
            f"--rounds {args.rounds} --devices {args.devices} --changes {args.changes} "
            f"--workers {args.workers} --paths {','.join(paths)}"
        )
        node_commands = {p: n.describe() for p, n in nodes.items()}
    report(args, results, steps, started, command, node_commands)
    return 0


def report(
    args: argparse.Namespace,
    results: dict[str, list[dict[str, float]]],
    steps: list[dict[str, float]],
    started: dict[str, float],
    command: str,
    node_commands: dict[str, str],
) -> None:
    def s(rows: list[dict[str, float]], key: str, fmt: str = "{:.0f}", scale: float = 1.0) -> str:
        return spread(r.get(key, float("nan")) * scale for r in rows).text(fmt)

    print(
        f"\nRefreshed snapshot of {args.devices:,} devices ({args.changes} changed), "
        f"{args.workers} workers, {args.rounds} rounds (median (min-max))"
    )
    cols = (
        ("fetch ms", "fetch_s", 1000.0),
        ("agent has it ms", "agent_s", 1000.0),
        ("workers have it ms", "workers_s", 1000.0),
        ("worker stall ms", "stall_ms", 1.0),
        ("(before) ms", "base_ms", 1.0),
        ("/readyz max ms", "readyz_max_ms", 1.0),
        ("GC agent ms", "gc_agent_ms", 1.0),
        ("GC worker ms", "gc_worker_ms", 1.0),
        ("push -> blocked ms", "push_block_s", 1000.0),
        ("errors", "errors", 1.0),
    )
    print(f"{'path':9} " + " ".join(f"{t:>20}" for t, _k, _s in cols))
    for path, rows in results.items():
        print(f"{path:9} " + " ".join(f"{s(rows, k, scale=sc):>20}" for _t, k, sc in cols))
    print(
        "worker stall: the worst latency of a 5 ms probe served by that worker between the "
        "trigger and every worker running the new version (+1 s), over all workers; "
        "(before): the same over the 2 s before the trigger"
    )
    for path, rows in results.items():
        during = [r["push_during"] for r in rows if "push_during" in r]
        if during:
            print(
                f"{path}: a block pushed as the agent had the new policy was in force "
                f"{s(rows, 'push_block_s', scale=1000.0)} ms later, the workers still "
                f"assembling it in {int(sum(during))} of {len(during)} rounds"
            )
    print(
        "node start with the first snapshot: "
        + ", ".join(f"{p} {t:.1f} s" for p, t in started.items())
    )
    print(
        f"in this process, CPU ms (JSON {steps[0]['json_mib']:.1f} MiB): "
        + ", ".join(
            f"{title} {s(steps, key)}"
            for title, key in (
                ("signature check", "verify"),
                ("parse + validate", "parse"),
                ("digest", "digest"),
                ("index build", "index"),
                ("parse + validate with the collector paused (as the node does)", "parse_paused"),
                ("index build so", "index_paused"),
                ("parse + validate in slices (as the agent's loop does)", "sliced"),
                ("index build in slices", "sliced_index"),
                ("the longest slice of either (wall ms)", "longest_step"),
                ("journal record", "journal"),
                ("delta for the workers", "delta"),
                ("its JSON lines", "delta_lines"),
                ("the delta's comparison in slices (as the agent's loop does)", "sliced_delta"),
                ("its longest slice (wall ms)", "longest_delta_step"),
            )
        )
    )
    for path, cmd in node_commands.items():
        print(f"{path} node started as: {cmd}")
    print(f"reproduce: {command}")
    for path, rows in results.items():
        record(
            BENCH,
            f"{path}: trigger -> all workers ms",
            s(rows, "workers_s", scale=1000.0),
            command=command,
        )
        record(BENCH, f"{path}: worst worker stall ms", s(rows, "stall_ms"), command=command)
        if any("push_block_s" in r for r in rows):
            pushed = s(rows, "push_block_s", scale=1000.0)
            record(BENCH, f"{path}: block pushed meanwhile -> in force ms", pushed, command=command)
    record(BENCH, "parse + validate CPU ms", s(steps, "parse"), command=command)
    record(
        BENCH,
        "parse + validate, collector paused, CPU ms",
        s(steps, "parse_paused"),
        command=command,
    )


if __name__ == "__main__":
    sys.exit(main())
