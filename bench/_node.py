"""A gateway node started the way operators start one, for the benches.

``seg-gateway run --config gateway.toml`` (the console script next to this Python, or
``python -m onprem_gateway run``): the agent, its worker processes, the reporter that
ships access events, the admin port. Only the configuration is the bench's: the node
listens on 127.0.0.1, talks to the control-plane stand-in (``_standin.py``) or is
air-gapped (``--policy-file``), and logs warnings only.

Also here: what the benches read from /proc (CPU, RSS, who owns a client connection)
and an optional GC-pause probe. The node exposes no GC pauses, so the probe measures
them from outside the product code: a ``sitecustomize`` module on the node's PYTHONPATH
registers a ``gc.callbacks`` hook in the agent and every worker and writes each pause
(with its wall-clock start) to ``<dir>/gc-<pid>.json`` when the process exits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from _policy import BENCH_PIN, CREDENTIAL
from _verify import parse_metrics

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc -------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    return _kib_field(pids, "status", "VmRSS:")


def pss_bytes(pids: list[int]) -> int:
    """The processes' proportional set size: each shared page (the interpreter, the
    extension modules every worker maps) counted once across them, not once per process
    as the RSS sum counts it."""
    return _kib_field(pids, "smaps_rollup", "Pss:")


def _kib_field(pids: list[int], name: str, field: str) -> int:
    """The sum over ``pids`` of a ``<field> <n> kB`` line of ``/proc/<pid>/<name>``."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def connection_owners(pids: list[int], server_port: int) -> dict[int, int]:
    """{client port: pid} for the TCP connections to ``server_port`` held by ``pids``:
    which worker process serves which of our client connections."""
    inode_pid: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inode_pid[link[8:-1]] = pid
        except OSError:
            continue
    owners: dict[int, int] = {}
    for cols in tcp_sockets():
        local_port = int(cols[1].rsplit(":", 1)[1], 16)
        remote_port = int(cols[2].rsplit(":", 1)[1], 16)
        if local_port == server_port and cols[9] in inode_pid:
            owners[remote_port] = inode_pid[cols[9]]
    return owners


def tcp_sockets() -> Iterator[list[str]]:
    """The columns of each TCP socket of the machine (``/proc/net/tcp`` and ``tcp6``):
    local and remote address in [1] and [2] (hex ``ip:port``), state in [3] (hex, e.g.
    06 TIME_WAIT, 08 CLOSE_WAIT), inode in [9]."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM, wait, SIGKILL if it does not go: the one way the benches stop a process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def spooled_events(state_dir: Path) -> int:
    """Requests in a node's on-disk spool: each event carries one "event_id", and a
    folded one (a node that could not deliver) the "count" of requests it stands for."""
    total = 0
    for p in (state_dir / "spool").glob("*.seg"):
        data = p.read_bytes()
        extra = sum(int(n) - 1 for n in re.findall(rb'"count":(\d+)', data))
        total += data.count(b'"event_id"') + extra
    return total


# --- GC-pause probe ----------------------------------------------------------------------

_SITECUSTOMIZE = '''
"""Bench probe (not product code): log this process's garbage-collector pauses."""
import atexit, gc, json, os, sys, time

_dir = os.environ.get("SEG_BENCH_GC_DIR")
if _dir:
    _pauses = []
    _start = [0.0, 0.0, 0.0]

    def _on_gc(phase, info):
        if phase == "start":
            _start[0], _start[1] = time.perf_counter(), time.time()
            _start[2] = time.thread_time()
        elif _start[0]:
            _pauses.append((
                _start[1],
                info["generation"],
                time.perf_counter() - _start[0],
                time.thread_time() - _start[2],
            ))
            _start[0] = 0.0

    gc.callbacks.append(_on_gc)

    def _dump():
        argv = " ".join(sys.argv)  # -m puts the module's file path in argv[0]
        worker = "agent/worker_process" in argv or "agent.worker_process" in argv
        name = "worker" if worker else "agent"
        with open(os.path.join(_dir, f"gc-{os.getpid()}.json"), "w") as fh:
            json.dump({"pid": os.getpid(), "role": name, "pauses": _pauses}, fh)

    atexit.register(_dump)
'''


def gc_probe_dir(work: Path) -> Path:
    """A directory holding the probe's sitecustomize.py (put it on the node's PYTHONPATH
    and set SEG_BENCH_GC_DIR to where the pauses go)."""
    probe = work / "gc-probe"
    probe.mkdir(exist_ok=True)
    (probe / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return probe


class Pause(NamedTuple):
    """One collector pass. On a busy machine its wall time (``seconds``) includes time the
    process waited for a core; its CPU time is the pass's own cost."""

    start: float  # wall clock
    generation: int
    seconds: float
    cpu_seconds: float  # of the pausing thread


@dataclass
class GcPauses:
    """The collector passes of the node's processes, by role (agent, worker)."""

    by_role: dict[str, list[Pause]] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> GcPauses:
        out = cls()
        for path in directory.glob("gc-*.json"):
            data = json.loads(path.read_text())
            out.by_role.setdefault(data["role"], []).extend(Pause(*p) for p in data["pauses"])
        return out

    def between(self, role: str, start: float, end: float) -> list[Pause]:
        return [p for p in self.by_role.get(role, []) if start <= p.start <= end]

    def within(self, role: str, start: float, end: float) -> list[float]:
        """The wall seconds of the passes that started between ``start`` and ``end``."""
        return [p.seconds for p in self.between(role, start, end)]


# --- the node ----------------------------------------------------------------------------


@dataclass
class NodeOptions:
    upstream_url: str
    workers: int = 2
    tls: tuple[Path, Path] | None = None  # (cert, key); None: listen_plain_http
    api_url: str = ""  # "" with policy_file: air-gapped
    ws_url: str = ""
    policy_file: Path | None = None
    event_flush_interval_s: float | None = None  # None: the default
    max_spool_bytes: int | None = None
    listen_port: int = 0
    gc_probe: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def seg_gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "seg-gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "onprem_gateway"]


class GatewayNode:
    """One ``seg-gateway run`` node in ``work/<name>``."""

    def __init__(self, work: Path, name: str, options: NodeOptions) -> None:
        self.dir = work / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin_port = 0
        self.worker_pids: list[int] = []
        self.gc_dir = self.dir / "gc"
        self.config_file = self.dir / "gateway.toml"
        self.log_file = self.dir / "node.log"

    def config(self) -> dict[str, Any]:
        o = self.options
        values: dict[str, Any] = {
            "listen_host": "127.0.0.1",
            "listen_port": o.listen_port,
            "upstream_url": o.upstream_url,
            "upstream_allow_plain_http": o.upstream_url.startswith("http:"),
            "node_id": "bench-node",
            "state_dir": str(self.dir / "state"),
            "admin_host": "127.0.0.1",
            "admin_port": 0,
            "workers": o.workers,
            "log_level": "WARNING",
            # Held Pings are answered before a bench stops its node; the rest of the
            # grace is the last access-event delivery (deadline: min(10, grace) s).
            "shutdown_grace_s": 10.0,
        }
        if o.tls is None:
            values["listen_plain_http"] = True
        else:
            values["tls_cert"], values["tls_key"] = str(o.tls[0]), str(o.tls[1])
        # The node applies only policy signed by the benches' key (``_policy``).
        values["policy_signing_keys"] = BENCH_PIN
        if o.api_url:
            values.update(api_url=o.api_url, ws_url=o.ws_url, credential=CREDENTIAL)
            if o.api_url.startswith("http:"):  # the stand-in on 127.0.0.1
                values["control_plane_allow_plain_http"] = True
        if o.event_flush_interval_s is not None:
            values["event_flush_interval_s"] = o.event_flush_interval_s
        if o.max_spool_bytes is not None:
            values["max_spool_bytes"] = o.max_spool_bytes
        values.update(o.extra)
        return values

    def describe(self) -> str:
        """The operator's command and its configuration, for the bench's report."""
        cmd = "seg-gateway run --config gateway.toml"
        if self.options.policy_file is not None:
            cmd += " --policy-file policy.json"
        keys = ("workers", "listen_plain_http", "tls_cert", "event_flush_interval_s")
        keys += ("max_spool_bytes", "api_url")
        shown = {k: v for k, v in self.config().items() if k in keys}
        if "tls_cert" in shown:
            shown["tls_cert"] = "<ECDSA P-256, the same as nginx's>"
        if "api_url" in shown:
            shown["api_url"] = "<the control-plane stand-in>"
        return f"{cmd}  (gateway.toml: {', '.join(f'{k} = {v}' for k, v in shown.items())})"

    def command(self) -> list[str]:
        cmd = [*seg_gateway_command(), "run", "--config", str(self.config_file)]
        if self.options.policy_file is not None:
            cmd += ["--policy-file", str(self.options.policy_file)]
        return cmd

    def start(self, timeout: float = 120.0, policy_version: int | None = None) -> None:
        self.config_file.write_text(
            "".join(f"{k} = {_toml_value(v)}\n" for k, v in self.config().items())
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEG_GW_")}
        paths = [str(ROOT)]
        if self.options.gc_probe:
            self.gc_dir.mkdir(exist_ok=True)
            paths.insert(0, str(gc_probe_dir(self.dir)))
            env["SEG_BENCH_GC_DIR"] = str(self.gc_dir)
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        runtime = self.dir / "state" / "runtime.json"
        deadline = time.monotonic() + timeout
        while not runtime.exists():
            self._alive_or_raise()
            if time.monotonic() > deadline:
                raise RuntimeError(f"node did not start in {timeout:.0f} s ({self.log_file})")
            time.sleep(0.05)
        data = json.loads(runtime.read_text())
        self.port, self.admin_port = int(data["listen_port"]), int(data["admin_port"])
        while True:  # ready: policy loaded (the expected version), every worker serving
            self._alive_or_raise()
            body = self.readyz()
            workers = body.get("workers", [])
            version = body.get("policy", {}).get("version")
            if (
                body.get("ready")
                and len(workers) == self.options.workers
                and all(w["ready"] for w in workers)
                and (policy_version is None or version == policy_version)
                and all(w["policy_version"] == version for w in workers)
            ):
                self.worker_pids = [int(w["pid"]) for w in workers]
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node not ready in {timeout:.0f} s: {body.get('reasons')}")
            time.sleep(0.1)

    def _alive_or_raise(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"node exited with {self.proc.returncode}:\n{tail}")

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pids(self) -> list[int]:
        """Agent + workers: every process of the node."""
        assert self.proc is not None
        return [self.proc.pid, *self.worker_pids]

    def readyz(self) -> dict[str, Any]:
        try:
            r = httpx.get(f"{self.admin_url}/readyz", timeout=10)
            return dict(r.json())
        except (httpx.HTTPError, ValueError):
            return {}

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.admin_url}/metrics", timeout=10).text)

    def settled_metrics(self, key_prefix: str = "seg_gateway_requests_total") -> dict[str, float]:
        """/metrics once the workers' counters (reported every second) stop moving."""
        last: dict[str, float] | None = None
        for _ in range(20):
            time.sleep(1.2)
            now = self.metrics()
            picked = {k: v for k, v in now.items() if k.startswith(key_prefix)}
            if last is not None and picked == last:
                return now
            last = picked
        return now

    def stop(self) -> int | None:
        return None if self.proc is None else stop_proc(self.proc, 60.0)

    def gc_pauses(self) -> GcPauses:
        return GcPauses.read(self.gc_dir)
