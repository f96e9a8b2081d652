"""Our load generator: open loop (wrk2's model) and serial, on uvloop, in worker processes.

No open-loop HTTP generator is installable here (Debian has wrk but not wrk2; nothing
on PyPI fits), so this is a small one. The model is wrk2's: a fixed pool of keep-alive
connections opened *before* the clock starts; connection c of C sends its k-th request
at the intended time ``t0 + offset_c + k * C / rate`` (the offsets interleave all
connections of all processes evenly). When a request is due while its connection still
waits for the previous answer, it is sent as soon as that answer is in and its latency
counts from its *intended* send time: the time it queued behind a slow server is not
missed (a closed-loop generator would simply send less and report flattering latencies:
coordinated omission). When its connection was free, it counts from the moment it was
written; the gap to the intended time is then the generator's own lateness (its timers
have millisecond granularity, its event loop may fall behind), reported as send lag.

Every answer is checked (``_verify.answer_error``): only the upstream's own answer is a
success. A request still unanswered at the deadline, or lost with its connection, is an
error. The generator reports its own lateness (how long after the intended time a due
request was actually written, when its connection was free: the generator's event loop
falling behind) and its CPU time, so a run can show it was not the bottleneck; the
benches also run it against nginx at the same rate.

``serial`` mode is one connection, one request at a time (the next as soon as the
answer is in): latency from the actual send.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import resource
import ssl
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import httptools
import uvloop
from _verify import answer_error, percentile


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    cafile: str = ""  # set: TLS, verified against this certificate
    server_hostname: str = "localhost"

    @property
    def scheme(self) -> str:
        return "https" if self.cafile else "http"


@dataclass
class LoadResult:
    mode: str
    rate: float  # intended requests/s (0: serial)
    duration_s: float
    sent: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: array = field(default_factory=lambda: array("d"))
    lag_ms: array = field(default_factory=lambda: array("d"))
    cpu_s: float = 0.0  # the generator's own CPU time (all its processes)
    wall_s: float = 0.0
    # per connection: (local port, [(intended wall time, latency ms), ...]) (timeline=True)
    timelines: list[tuple[int, list[tuple[float, float]]]] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @property
    def achieved_rps(self) -> float:
        return self.answered / self.wall_s if self.wall_s else 0.0

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.answered += other.answered
        self.errors.update(other.errors)
        self.latencies_ms.extend(other.latencies_ms)
        self.lag_ms.extend(other.lag_ms)
        self.cpu_s += other.cpu_s
        self.wall_s = max(self.wall_s, other.wall_s)
        self.timelines.extend(other.timelines)

    def error_text(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.errors.most_common()) or "0"


class _Conn(asyncio.Protocol):
    """One keep-alive client connection with at most one request outstanding."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()
        self.k = 0  # index of the next request of this connection's schedule
        self.started = 0.0  # perf_counter time the outstanding request's latency counts from
        self.outstanding = False
        self.timeline: list[tuple[float, float]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.run.failed(self, "malformed answer")
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        body, self.body = bytes(self.body), bytearray()
        self.run.answered(self, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.outstanding:
            self.run.failed(self, "connection lost")


class _Run:
    """One process's share of a load: its connections and their schedules."""

    def __init__(
        self,
        target: Target,
        requests: list[bytes],
        *,
        mode: str,
        rate: float,
        duration: float,
        connections: int,
        first_offset: int,
        stride: int,
        start_wall: float,
        drain_s: float,
        timeline: bool,
        ready: Connection | None,
    ) -> None:
        self.target = target
        self.requests = requests
        self.mode = mode
        self.rate = rate
        self.duration = duration
        self.n_conns = connections
        self.first_offset = first_offset
        self.stride = stride
        self.start_wall = start_wall
        self.drain_s = drain_s
        self.keep_timeline = timeline
        self.ready_pipe = ready
        self.loop = asyncio.get_running_loop()
        self.result = LoadResult(mode, rate, duration)
        self.next_request = first_offset
        self.t0 = 0.0
        self.end = 0.0
        self.active = 0
        self.all_done = self.loop.create_future()
        self.ctx: ssl.SSLContext | None = None
        if target.cafile:
            self.ctx = ssl.create_default_context(cafile=target.cafile)

    # --- schedule ------------------------------------------------------------------------

    def _due(self, conn: _Conn) -> float:
        """perf_counter time at which ``conn``'s request number ``conn.k`` is due."""
        total = self.n_conns * self.stride  # connections of all processes
        offset = (self.first_offset + conn.index * self.stride) / self.rate
        return self.t0 + offset + conn.k * total / self.rate

    def _schedule(self, conn: _Conn) -> None:
        now = time.perf_counter()
        due = now if self.mode == "serial" else self._due(conn)
        if due >= self.end:
            self._finished(conn)
            return
        if due > now:
            self.loop.call_later(due - now, self._send, conn, due, True)
        else:
            self._send(conn, due, False)

    def _send(self, conn: _Conn, due: float, timed: bool) -> None:
        """Send ``conn``'s next request. ``timed``: its timer fired (the connection was
        free at the due time), so the latency counts from now and the delay past ``due``
        is the generator's own lateness (timers here have millisecond granularity);
        otherwise the request waited for its connection and counts from ``due``."""
        if conn.transport is None or conn.transport.is_closing():
            self.loop.create_task(self._reconnect_and_send(conn, due))
            return
        now = time.perf_counter()
        if timed:
            self.result.lag_ms.append((now - due) * 1000)
        conn.started = now if timed else due
        conn.outstanding = True
        self.result.sent += 1
        conn.transport.write(self.requests[self.next_request % len(self.requests)])
        self.next_request += self.stride

    async def _reconnect_and_send(self, conn: _Conn, due: float) -> None:
        try:
            await self._open(conn)
        except (OSError, ssl.SSLError):
            self.result.errors["connect failed"] += 1
            conn.k += 1
            self.loop.call_later(0.05, self._schedule, conn)
            return
        self._send(conn, due, False)

    # --- answers -------------------------------------------------------------------------

    def answered(self, conn: _Conn, status: int, body: bytes) -> None:
        latency_ms = (time.perf_counter() - conn.started) * 1000
        conn.outstanding = False
        self.result.answered += 1
        self.result.latencies_ms.append(latency_ms)
        if self.keep_timeline:
            conn.timeline.append((self.start_wall + (conn.started - self.t0), latency_ms))
        error = answer_error(status, body)
        if error is not None:
            self.result.errors[error] += 1
        conn.k += 1
        self._schedule(conn)

    def failed(self, conn: _Conn, kind: str) -> None:
        if conn.outstanding:
            conn.outstanding = False
            self.result.errors[kind] += 1
            conn.k += 1
            self.loop.call_soon(self._schedule, conn)

    def _finished(self, conn: _Conn) -> None:
        self.active -= 1
        if self.active == 0 and not self.all_done.done():
            self.all_done.set_result(None)

    # --- running -------------------------------------------------------------------------

    async def _open(self, conn: _Conn) -> None:
        """(Re)connect ``conn``: the same protocol object keeps its schedule."""
        conn.parser = httptools.HttpResponseParser(conn)
        conn.body = bytearray()
        conn.transport = None
        await self.loop.create_connection(
            lambda: conn,
            self.target.host,
            self.target.port,
            ssl=self.ctx,
            server_hostname=self.target.server_hostname if self.ctx else None,
        )

    async def main(self) -> LoadResult:
        conns = [_Conn(self, i) for i in range(self.n_conns)]
        for conn in conns:
            await self._open(conn)
        if self.ready_pipe is not None:
            ports = [c.transport.get_extra_info("sockname")[1] for c in conns if c.transport]
            self.ready_pipe.send(("ready", ports))
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        # Everyone starts at the same wall-clock instant.
        await asyncio.sleep(max(0.0, self.start_wall - time.time()))
        self.t0 = time.perf_counter()
        self.end = self.t0 + self.duration
        self.active = len(conns)
        for conn in conns:
            self._schedule(conn)
        try:
            await asyncio.wait_for(self.all_done, self.duration + self.drain_s)
        except TimeoutError:
            stuck = sum(1 for c in conns if c.outstanding)
            self.result.errors["no answer before the deadline"] += stuck
        self.result.wall_s = time.perf_counter() - self.t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        self.result.cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        if self.keep_timeline:
            self.result.timelines = [
                (c.transport.get_extra_info("sockname")[1] if c.transport else 0, c.timeline)
                for c in conns
            ]
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        return self.result


def _child(pipe: Connection, kwargs: dict[str, object]) -> None:
    async def go() -> LoadResult:
        run = _Run(ready=pipe, **kwargs)  # type: ignore[arg-type]
        return await run.main()

    try:
        result = uvloop.run(go())
        pipe.send(("result", pickle.dumps(result)))
    except Exception as exc:  # reported to the parent, which raises
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


class LoadRun:
    """A load running in ``procs`` child processes (fork: nothing to pickle)."""

    def __init__(
        self,
        target: Target,
        requests: list[bytes],
        *,
        mode: str = "open",
        rate: float = 1000.0,
        duration: float = 10.0,
        connections: int = 32,
        procs: int = 2,
        drain_s: float = 10.0,
        timeline: bool = False,
    ) -> None:
        if mode == "serial":
            procs, connections = 1, 1
        procs = max(1, min(procs, connections))
        self.mode, self.rate, self.duration = mode, rate, duration
        ctx = multiprocessing.get_context("fork")
        start_wall = time.time() + 1.0 + 0.02 * connections  # time to open the pools
        self.pipes: list[Connection] = []
        self.procs = []
        for p in range(procs):
            share = connections // procs + (1 if p < connections % procs else 0)
            parent, child = ctx.Pipe()
            kwargs = {
                "target": target,
                "requests": requests,
                "mode": mode,
                "rate": rate,
                "duration": duration,
                "connections": share,
                "first_offset": p,
                "stride": procs,
                "start_wall": start_wall,
                "drain_s": drain_s,
                "timeline": timeline,
            }
            proc = ctx.Process(target=_child, args=(child, kwargs), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.local_ports: list[int] = []

    def wait_ready(self) -> list[int]:
        """The client ports of every connection, once all are open (before the clock)."""
        for pipe in self.pipes:
            kind, value = pipe.recv()
            if kind != "ready":
                raise RuntimeError(f"load generator failed: {value}")
            self.local_ports.extend(value)
        return self.local_ports

    def result(self) -> LoadResult:
        if not self.local_ports:
            self.wait_ready()
        total = LoadResult(self.mode, self.rate, self.duration)
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            kind, value = pipe.recv()
            proc.join(10)
            if kind != "result":
                raise RuntimeError(f"load generator failed: {value}")
            total.merge(pickle.loads(value))
        return total


def run_load(target: Target, requests: list[bytes], **kwargs: object) -> LoadResult:
    return LoadRun(target, requests, **kwargs).result()  # type: ignore[arg-type]
