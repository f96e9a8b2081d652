"""Soak run of the local runtime: does ``seg up`` survive hours without leaking?

Starts the whole system as ``seg up`` does (``seg_local.stack``: the control plane with
moto in its own process, two ``seg-gateway`` nodes, the demo mail server in this
process; ephemeral ports on 127.0.0.1 only), then for ``--minutes`` loops: every
``--interval`` seconds one compliance change for one of ``--devices`` devices (enrolled
on first use, then alternating compromised / clean Device Services check-ins, sometimes
a console override and later its ``clear``), waits until BOTH nodes' diagnostics answer
the expected decision (failure past ``--bound`` seconds), then syncs that device through
each node with a real EAS 16.1 client (pyactivesync: Provision, FolderSync, 2 x Sync),
which must go through when allowed and be refused when blocked; its access events flow
to the dashboard, which is checked once a minute.

Once a minute it prints, per process of the stack (this process holds the demo mail
server): RSS, threads, open fds, sockets and sockets in CLOSE_WAIT (read from /proc);
DynamoDB items (DescribeTable ItemCount per table) and SQS depth (visible + in flight, DLQs
apart) read straight from moto; the minute's enforcement latency p50/p99, the check-in
POST and dashboard-query latencies, failures, and new ERROR lines in the stack's logs.
At the end: growth of RSS / fds / threads per hour (least squares after a warm-up),
latency drift, failures and the exact command to reproduce. Stops by itself; every
child process is stopped (and checked gone) on exit, Ctrl-C or SIGTERM.

Known finding (moto 5.2.5): ``moto.core.common_models.BaseModel.__new__`` appends every
model instance to a class-level ``instances_tracked`` list that only a mock reset clears,
so in server mode every DynamoDB ``Item`` copy a Scan / Query / GetItem makes lives
forever (~0.75 KB per item read). The control plane's RSS therefore grows with the items
READ (the TTL sweeper scans whole tables every minute); this script reads item counts
with DescribeTable so that it does not add to it.

    .venv/bin/python bench/soak.py [--minutes 30] [--devices 50] [--interval 2]
                                   [--ws-max-connection-s 7200]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from _node import children_of, tcp_sockets
from _verify import slope

from seg_cli.demo import DemoDevice, checkin, enroll, refused_reason, sync_inbox
from seg_local.controlplane import FAKE_AWS_ENV, REGION
from seg_local.stack import Stack, StackOptions

ERROR_LINE = re.compile(r"ERROR|CRITICAL|Traceback|Exception", re.IGNORECASE)
WARMUP_MIN = 5  # growth is fitted on samples after this minute (caches, imports settle)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, value), in value per hour."""
    return 60 * slope(points)


# --- /proc ---------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children_of(p))
    return pids


def _close_wait_inodes() -> set[str]:
    # TCP_CLOSE_WAIT (08): the peer closed, we never did.
    return {cols[9] for cols in tcp_sockets() if cols[3] == "08"}


@dataclass
class ProcSample:
    rss_mb: float = 0.0
    threads: int = 0
    fds: int = 0
    sockets: int = 0
    close_wait: int = 0
    pids: int = 0


def _proc_sample(pid: int, close_wait: set[str], *, tree: bool = True) -> ProcSample:
    """One process, plus its descendants with ``tree`` (this process's children are the
    stack's own processes, sampled apart)."""
    s = ProcSample()
    for p in _tree(pid) if tree else [pid]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        s.pids += 1
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                s.rss_mb += int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                s.threads += int(line.split()[1])
        s.fds += len(fds)
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                s.sockets += 1
                if target[8:-1] in close_wait:
                    s.close_wait += 1
    return s


# --- moto state ----------------------------------------------------------------------


class MotoState:
    def __init__(self, endpoint: str) -> None:
        session = boto3.session.Session(
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )
        self.ddb = session.client("dynamodb", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)

    def items(self) -> dict[str, int]:
        """DescribeTable's ItemCount: live in moto (AWS refreshes it every ~6 h). Not a
        Scan: moto keeps every item copy a Scan makes (see the module docstring)."""
        return {
            table: self.ddb.describe_table(TableName=table)["Table"].get("ItemCount", 0)
            for table in self.ddb.list_tables()["TableNames"]
        }

    def queues(self) -> dict[str, int]:
        depth = {}
        for url in self.sqs.list_queues().get("QueueUrls", []):
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            depth[url.rsplit("/", 1)[1]] = sum(int(v) for v in attrs.values())
        return depth


# --- the workload ----------------------------------------------------------------------


@dataclass
class DeviceState:
    device: DemoDevice
    enrolled: bool = False
    compromised: bool = False
    override: str | None = None  # "allow" / "block" while an override is in force
    last_sync_at: float = 0.0
    last_access: str = ""

    @property
    def expected(self) -> str:
        if self.override:
            return self.override
        return "block" if self.compromised else "allow"


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)  # slowest node, seconds
    post_s: list[float] = field(default_factory=list)
    changes: int = 0
    syncs: int = 0
    failures: Counter[str] = field(default_factory=Counter)


def _wait_both(
    clients: dict[str, httpx.Client], dev: DemoDevice, access: str, start: float, bound: float
) -> float | None:
    """Seconds until every node answers ``access`` (None past the bound)."""
    pending = set(clients)
    slowest = 0.0
    while pending and time.monotonic() - start < bound:
        for node_id in list(pending):
            try:
                r = clients[node_id].get(
                    "/diagnostics/decision", params={"user": dev.user, "device_id": dev.device_id}
                )
                if r.status_code == 200 and r.json()["access"] == access:
                    pending.discard(node_id)
                    slowest = time.monotonic() - start
            except httpx.HTTPError:
                pass
        if pending:
            time.sleep(0.02)
    return None if pending else slowest


class Soak:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.rng = random.Random(args.seed)
        self.devices = [
            DeviceState(
                DemoDevice(f"soak{i:03d}", f"SOAKDEV{i:03d}", "iPhone", "iPhone 15", "iOS 18.1")
            )
            for i in range(args.devices)
        ]
        self.diag = {n.node_id: httpx.Client(base_url=n.admin_url, timeout=5) for n in stack.nodes}
        self.console = stack.console()
        self.moto = MotoState(stack.endpoints["moto_endpoint"])
        self.log_offsets: dict[Path, int] = {}
        self.error_lines: Counter[str] = Counter()
        self.rows: list[dict[str, Any]] = []
        self.total = Minute()
        self.all_lat: list[float] = []

    def close(self) -> None:
        for c in self.diag.values():
            c.close()
        self.console.close()

    # one change ------------------------------------------------------------------------

    def change(self, st: DeviceState, minute: Minute) -> None:
        dev = st.device
        start = time.monotonic()
        try:
            if not st.enrolled:
                enroll(self.stack, dev)
                checkin(self.stack, dev, compromised=False)
                st.enrolled, kind = True, "enroll"
            elif st.override:
                self._override(dev, "clear")
                st.override, kind = None, "clear"
            elif self.rng.random() < self.args.override_share:
                st.override = "allow" if st.expected == "block" else "block"
                self._override(dev, st.override)
                kind = "override"
            else:
                st.compromised = not st.compromised
                checkin(self.stack, dev, compromised=st.compromised)
                kind = "checkin"
        except Exception as exc:
            minute.failures[f"post:{type(exc).__name__}"] += 1
            print(f"  ! {dev.user}: change failed: {exc}", flush=True)
            return
        if kind in ("enroll", "checkin"):
            minute.post_s.append(time.monotonic() - start)
        minute.changes += 1
        took = _wait_both(self.diag, dev, st.expected, start, self.args.bound)
        if took is None:
            minute.failures["not_enforced"] += 1
            print(
                f"  ! {dev.user}: {kind} not '{st.expected}' on both nodes within "
                f"{self.args.bound:.0f} s",
                flush=True,
            )
        else:
            minute.latencies.append(took)

    def _override(self, dev: DemoDevice, action: str) -> None:
        r = self.console.post(
            f"/console/v1/email-devices/{dev.user}/{dev.device_id.lower()}/override",
            json={"action": action, "reason": "soak"},
        )
        if r.status_code != 202:
            raise RuntimeError(f"override {action}: HTTP {r.status_code} {r.text[:200]}")

    def sync(self, st: DeviceState, minute: Minute) -> None:
        assert self.stack.tls is not None
        ca = self.stack.tls.ca_cert
        for node in self.stack.nodes:
            try:
                if st.expected == "allow":
                    sync_inbox(node, ca, st.device)
                    outcome_ok = True
                else:
                    outcome_ok = refused_reason(node, ca, st.device) is not None
            except Exception as exc:
                minute.failures[f"eas:{type(exc).__name__}"] += 1
                print(f"  ! {st.device.user} via {node.node_id}: {exc}", flush=True)
                continue
            minute.syncs += 1
            if not outcome_ok:
                minute.failures["eas_wrong_decision"] += 1
                print(
                    f"  ! {st.device.user} via {node.node_id}: expected {st.expected}", flush=True
                )
        st.last_sync_at, st.last_access = time.monotonic(), st.expected

    # once a minute -----------------------------------------------------------------------

    def dashboard_check(self, minute: Minute) -> float:
        """Devices synced 20+ s ago must show their last decision; returns the query time."""
        rows: dict[str, dict[str, Any]] = {}
        start = time.monotonic()
        cursor = None
        while True:
            params: dict[str, Any] = {"q": "soak", "limit": 500}
            if cursor:
                params["cursor"] = cursor
            r = self.console.get("/console/v1/email-devices", params=params)
            if r.status_code != 200:
                minute.failures["dashboard_http"] += 1
                return time.monotonic() - start
            page = r.json()
            rows.update({i["device_id"]: i for i in page["items"]})
            cursor = page.get("next_cursor")
            if not cursor:
                break
        took = time.monotonic() - start
        now = time.monotonic()
        for st in self.devices:
            if not st.last_sync_at or now - st.last_sync_at < 20:
                continue
            row = rows.get(st.device.device_id.lower())
            if row is None or row["access_state"] != st.last_access:
                minute.failures["dashboard_mismatch"] += 1
                got = row and row["access_state"]
                print(
                    f"  ! dashboard: {st.device.user} shows {got}, last sync {st.last_access}",
                    flush=True,
                )
        return took

    def new_log_errors(self) -> int:
        n = 0
        for path in sorted((self.stack.state_dir / "logs").glob("*.log")):
            off = self.log_offsets.get(path, 0)
            try:
                with path.open("rb") as fh:
                    fh.seek(off)
                    data = fh.read()
            except OSError:
                continue
            self.log_offsets[path] = off + len(data)
            for line in data.decode(errors="replace").splitlines():
                if ERROR_LINE.search(line):
                    n += 1
                    key = re.sub(r"\d+", "N", line.strip())[:160]
                    self.error_lines[f"{path.name}: {key}"] += 1
        return n

    def processes(self) -> dict[str, int]:
        procs = {"soak+mail": os.getpid()}
        assert self.stack.control_plane is not None and self.stack.control_plane.proc
        procs["controlplane"] = self.stack.control_plane.proc.pid
        for n in self.stack.nodes:
            assert n.child.proc is not None
            procs[n.node_id] = n.child.proc.pid
        return procs

    def sample(self, t_min: float, minute: Minute) -> dict[str, Any]:
        close_wait = _close_wait_inodes()
        row: dict[str, Any] = {"t": t_min, "procs": {}}
        for name, pid in self.processes().items():
            if name != "soak+mail" and not Path(f"/proc/{pid}").exists():
                minute.failures[f"{name}_died"] += 1
            row["procs"][name] = _proc_sample(pid, close_wait, tree=name != "soak+mail")
        try:
            items = self.moto.items()
            queues = self.moto.queues()
        except Exception as exc:
            minute.failures["moto_read"] += 1
            print(f"  ! moto read: {exc}", flush=True)
            items, queues = {}, {}
        row["items"] = items
        row["queues"] = queues
        row["dash_s"] = self.dashboard_check(minute)
        row["log_errors"] = self.new_log_errors()
        row["minute"] = minute
        return row


def _print_header(names: list[str]) -> None:
    cols = "  ".join(f"{n[:12]:>25}" for n in names)
    print(
        f"{'min':>4} {'chg':>4} {'p50ms':>6} {'p99ms':>6} {'postms':>6} {'dashms':>6} "
        f"{'items':>6} {'sqs':>4} {'dlq':>4} {'fail':>4} {'logerr':>6}  {cols}"
    )
    sub = "  ".join(f"{'rssMB thr fd sock cw':>25}" for _ in names)
    print(f"{'':>63}  {sub}", flush=True)


def _print_row(row: dict[str, Any]) -> None:
    m: Minute = row["minute"]
    lat = [x * 1000 for x in m.latencies]
    post = [x * 1000 for x in m.post_s]
    sqs = sum(v for k, v in row["queues"].items() if "dlq" not in k.lower())
    dlq = sum(v for k, v in row["queues"].items() if "dlq" in k.lower())
    cols = "  ".join(
        f"{p.rss_mb:>7.1f} {p.threads:>3} {p.fds:>4} {p.sockets:>4} {p.close_wait:>2}"
        for p in row["procs"].values()
    )
    print(
        f"{row['t']:>4.0f} {m.changes:>4} {_pct(lat, 0.5):>6.0f} {_pct(lat, 0.99):>6.0f} "
        f"{_pct(post, 0.5):>6.0f} {row['dash_s'] * 1000:>6.0f} {sum(row['items'].values()):>6} "
        f"{sqs:>4} {dlq:>4} {sum(m.failures.values()):>4} {row['log_errors']:>6}  {cols}",
        flush=True,
    )


def _summary(soak: Soak, rows: list[dict[str, Any]], argv: list[str]) -> None:
    print("\n=== summary ===")
    total_changes = sum(r["minute"].changes for r in rows)
    total_syncs = sum(r["minute"].syncs for r in rows)
    failures: Counter[str] = Counter()
    for r in rows:
        failures.update(r["minute"].failures)
    lat = [x * 1000 for r in rows for x in r["minute"].latencies]
    print(
        f"minutes sampled: {len(rows)}, changes: {total_changes}, EAS syncs "
        f"(4 requests each): {total_syncs}, failures: {sum(failures.values())} "
        f"{dict(failures) if failures else ''}"
    )
    if lat:
        print(
            f"change -> enforced on both nodes: p50 {_pct(lat, 0.5):.0f} ms, p90 "
            f"{_pct(lat, 0.9):.0f} ms, p99 {_pct(lat, 0.99):.0f} ms, max {max(lat):.0f} ms"
        )
    late = [r for r in rows if r["t"] > WARMUP_MIN] or rows
    fit = {
        "enforce p50 ms": [
            (r["t"], _pct(r["minute"].latencies, 0.5) * 1000) for r in late if r["minute"].latencies
        ],
        "check-in POST p50 ms": [
            (r["t"], _pct(r["minute"].post_s, 0.5) * 1000) for r in late if r["minute"].post_s
        ],
        "dashboard query ms": [(r["t"], r["dash_s"] * 1000) for r in late],
        "DynamoDB items": [(r["t"], float(sum(r["items"].values()))) for r in late],
    }
    third = max(1, len(rows) // 3)
    for name, pts in fit.items():
        if not pts:
            continue
        first = statistics.median(p[1] for p in pts[:third])
        last = statistics.median(p[1] for p in pts[-third:])
        print(
            f"{name:>22}: first third median {first:8.1f}, last third {last:8.1f}, "
            f"trend {_slope_per_hour(pts):+.1f}/h"
        )
    print(f"growth per hour (least squares over minutes > {WARMUP_MIN}; start -> end):")
    for name in rows[0]["procs"]:
        parts = []
        for attr, unit in (
            ("rss_mb", "MB"),
            ("fds", "fds"),
            ("threads", "thr"),
            ("sockets", "sock"),
            ("close_wait", "CLOSE_WAIT"),
        ):
            pts = [(r["t"], float(getattr(r["procs"][name], attr))) for r in late]
            a, b = getattr(rows[0]["procs"][name], attr), getattr(rows[-1]["procs"][name], attr)
            parts.append(f"{attr} {a:.0f}->{b:.0f} ({_slope_per_hour(pts):+.1f} {unit}/h)")
        print(f"  {name:>12}: " + ", ".join(parts))
    print("DynamoDB items at end: " + ", ".join(f"{k}={v}" for k, v in rows[-1]["items"].items()))
    print("SQS depth at end: " + ", ".join(f"{k}={v}" for k, v in rows[-1]["queues"].items()))
    print(
        f"error-looking log lines (logs in {soak.stack.state_dir / 'logs'}): "
        f"{sum(soak.error_lines.values())}"
    )
    for line, n in soak.error_lines.most_common(15):
        print(f"  {n:>5} x {line}")
    print("reproduce: .venv/bin/python bench/soak.py " + " ".join(argv))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between changes")
    parser.add_argument("--bound", type=float, default=10.0, help="enforcement bound, seconds")
    parser.add_argument("--override-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument(
        "--ws-max-connection-s",
        type=float,
        default=7200.0,
        help="API Gateway's WebSocket lifetime (shorten it to soak node reconnects)",
    )
    args = parser.parse_args()
    if args.minutes <= 0 or args.devices < 1 or args.interval <= 0 or args.bound <= 0:
        parser.error("--minutes, --devices, --interval and --bound must be positive")
    argv = sys.argv[1:]

    def _term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    state_dir = Path(tempfile.mkdtemp(prefix="seg-soak-"))
    stack = Stack(
        StackOptions(state_dir=state_dir, nodes=2, ws_max_connection_s=args.ws_max_connection_s)
    )
    t0 = time.monotonic()
    stack.start()
    print(f"system up in {time.monotonic() - t0:.1f} s; state and logs in {state_dir}")
    for n in stack.nodes:
        print(f"  {n.node_id}: {n.url} admin {n.admin_url} pid {n.child.proc and n.child.proc.pid}")
    soak = Soak(args, stack)
    pids = list(soak.processes().values())[1:]
    print(f"  control plane pid {pids[0]}, moto {stack.endpoints['moto_endpoint']}", flush=True)
    _print_header(list(soak.processes()))
    rows: list[dict[str, Any]] = []
    try:
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started + args.sample_s
        minute = Minute()
        i = 0
        while time.monotonic() < end:
            tick = time.monotonic()
            st = soak.devices[i % len(soak.devices)]
            i += 1
            soak.change(st, minute)
            soak.sync(st, minute)
            if time.monotonic() >= next_sample:
                row = soak.sample((time.monotonic() - started) / 60, minute)
                rows.append(row)
                _print_row(row)
                minute = Minute()
                next_sample += args.sample_s
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        print("interrupted: stopping the stack", flush=True)
    finally:
        soak.close()
        stack.stop()
        time.sleep(0.5)
        alive = [
            p
            for p in pids
            if Path(f"/proc/{p}").exists()
            and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        ]
        print(f"stack stopped; processes still alive: {alive or 'none'}", flush=True)
    if rows:
        _summary(soak, rows, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
