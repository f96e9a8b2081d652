"""One EAS worker process: ``python -m onprem_gateway.agent.worker_process --index N
--control-fd FD --listen-fd FD`` (started by ``worker_pool.WorkerPool``, never by hand).

It serves EAS on the listening socket it inherited, decides with a ``PolicyStore`` that
replays the agent's policy ops, and hands its access events and metrics to the agent
over the control socket (``channel.py``). It holds no credentials beyond the config the
agent sends, talks to no control plane, and exits when the agent says so or goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from onprem_gateway.agent.allocator import map_large_buffers
from onprem_gateway.agent.channel import (
    EVENTS_PER_MESSAGE,
    encode,
    encode_events,
    open_channel,
    read_body,
    read_message,
    read_policy_op,
)
from onprem_gateway.agent.eas_runner import proxy_settings
from onprem_gateway.agent.event_buffer import EventBuffer
from onprem_gateway.agent.logs import configure_logging
from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore
from onprem_gateway.agent.revocation import follow_policy
from onprem_gateway.agent.snapshot_parts import Assembly, ReplacementError
from onprem_gateway.agent.turns import release_gradually
from onprem_gateway.config import config_from_wire
from onprem_gateway.core.policy_index import PolicyMismatchError
from onprem_gateway.proxy import ProxyMetrics, start_eas_server
from seg_contract import AccessEvent

log = logging.getLogger("onprem_gateway.worker")

METRICS_EVERY_S = 1.0
_REPLACEMENT_OPS = ("begin", "part", "commit")
# After each message of a replacement a serving worker rests twice as long as the
# message took (at most a third of its time goes to the replacement): one assembling
# at full speed answered fewer requests than its devices sent, and their queue grew to
# 250-480 ms of latency over the second a 100,000-device policy took (resting as long:
# 25-56 ms).
REPLACEMENT_DUTY_PAUSE = 2.0


class Reading(Protocol):
    """What the worker needs of its channel's transport to stop reading for a while."""

    def is_reading(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool: ...


class WorkerProcess:
    """The worker's state: the channel to the agent, the policy replica, the server."""

    def __init__(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.store = PolicyStore()
        # The same bounded in-memory sink the agent uses; shipped to it in batches.
        self.events = EventBuffer()
        self.metrics = ProxyMetrics()
        self.stop = asyncio.Event()
        self.grace_s = 0.0
        # The replacement being received (``snapshot_parts``), and whether one was
        # refused: until the agent sends the next, the ops it sends apply to a policy
        # this worker does not hold, and are skipped (the next replacement has them).
        self.assembly: Assembly | None = None
        self.refused = False
        # How long to rest after a replacement's message, per second it took: none
        # before the worker serves (its first policy), REPLACEMENT_DUTY_PAUSE after.
        self.pace = 0.0
        # Once serving: collect the young generations and freeze what survived
        # (``Collector.adopt_survivors``) after each part of a replacement.
        self.adopt: Callable[[], None] | None = None
        # The channel's reading side, paused while the worker rests between two parts.
        self.reading: Reading | None = None

    def send(self, message: dict[str, object]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    def send_events(self, events: list[AccessEvent]) -> None:
        if events and not self.writer.is_closing():
            self.writer.write(encode_events(events))

    async def flush_events(self) -> None:
        """Hand the buffered events to the agent, a slice at a time with the event loop
        free in between, so a big flush never holds up the requests in flight."""
        batch = self.events.take_all()
        for start in range(0, len(batch), EVENTS_PER_MESSAGE):
            if start:
                await asyncio.sleep(0)
            self.send_events(batch[start : start + EVENTS_PER_MESSAGE])

    def send_metrics(self) -> None:
        self.send(
            {
                "op": "metrics",
                "data": self.metrics.snapshot(),
                "version": self.store.current().version,
            }
        )

    async def pump(self, flush_interval_s: float) -> None:
        ticks = 0
        every = max(1, round(METRICS_EVERY_S / flush_interval_s))
        while True:
            await asyncio.sleep(flush_interval_s)
            await self.flush_events()
            ticks += 1
            if ticks % every == 0:
                self.send_metrics()
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def apply(self, header: dict[str, Any]) -> None:
        """One policy message from the agent: an op, or a replacement's begin/part/commit."""
        if header["op"] in _REPLACEMENT_OPS:
            body = await read_body(self.reader) if header.get("body") else b""
            if body is not None:
                await self.replacement(header, body)
            return
        op = await read_policy_op(self.reader, header)
        if op is None:
            return
        if self.assembly is not None:
            if op.kind == "push":
                self.push_inside_replacement(op)
                return
            error = ReplacementError(f"policy op {op.kind!r} inside a replacement")
            await release_gradually(self.refuse(error))
        if self.refused:
            log.debug("policy op %s skipped: waiting for the agent's replacement", op.kind)
            return
        self.store.apply_op(op)
        self.send({"op": "applied", "version": self.store.current().version})

    def push_inside_replacement(self, op: PolicyOp) -> None:
        """A push the agent sent between two parts (``policy_outbox``): in force at once
        on the policy the worker decides with; the store records it (``begin_replace``)
        and applies it again to the new policy once installed (the push is newer than
        anything the replacement carries)."""
        with contextlib.suppress(PolicyMismatchError):  # the replacement moves clusters
            self.store.apply_op(op)

    async def replacement(self, header: dict[str, Any], body: bytes) -> None:
        """Fold one message of a replacement in; on ``commit`` swap the new index in."""
        op = header["op"]
        started = time.perf_counter()
        retired: Iterator[object] | None = None  # what a policy let go holds
        try:
            if op == "begin":
                if self.assembly is not None:
                    raise ReplacementError("replacement begun inside another")
                self.assembly = Assembly.begin(header, body)
                self.refused = False
                self.store.begin_replace()
            elif self.assembly is None:
                if not self.refused:
                    raise ReplacementError(f"replacement {op} without a begin")
                return  # the rest of a refused replacement
            elif op == "part":
                self.assembly.add(header.get("seq"), body)
                # The part's ~2,000 new objects leave the collector's reach now, in a
                # pass that walks only them (~0.2 ms). Left to the collector's 0.2 s
                # round, a pass walked the ~30 parts folded since: up to 7 ms of CPU.
                if self.adopt is not None:
                    self.adopt()
            else:
                index = self.assembly.commit(header.get("parts"))
                self.assembly = None
                retired = self.store.current().references()  # gathered after the swap
                self.store.install(index)  # with the pushes recorded meanwhile
                self.send({"op": "applied", "version": self.store.current().version})
        except ReplacementError as e:
            retired = self.refuse(e)
        took = time.perf_counter() - started
        if retired is not None:
            # The release must hold the only reference to what it frees: one kept here
            # would free it all at once when this returns.
            release = release_gradually(retired)
            del retired
            await release
        if op != "commit" or self.refused:
            # Requests are served between two parts (a part already read is no wait).
            await self.rest(took)

    async def rest(self, took: float) -> None:
        """Rest ``pace`` times as long as a replacement's message took, not reading the
        channel meanwhile: the agent writes a whole policy at once (~25 MB for 100,000
        devices), and a worker that kept reading it grew its stream buffer to that size
        while it folded the parts slowly, re-copying it at every growth (~70-95 ms of
        its loop per replacement, most of it as the agent began to write)."""
        reading = self.reading
        if reading is None or not reading.is_reading():
            await asyncio.sleep(took * self.pace)
            return
        reading.pause_reading()
        try:
            await asyncio.sleep(took * self.pace)
        finally:
            if not reading.is_closing():
                reading.resume_reading()

    def refuse(self, error: ReplacementError) -> Iterator[object]:
        """Abandon the replacement; returns what it had built, to free gradually."""
        held = self.assembly.references() if self.assembly is not None else iter(())
        version = self.store.current().version
        log.error(
            "policy replacement refused (%s); deciding with version %d until the agent "
            "sends it again",
            error,
            version,
        )
        self.assembly = None
        self.store.abandon_replace()  # the agent's next replacement carries its pushes
        self.refused = True
        self.send({"op": "refused", "version": version, "error": str(error)})
        return held

    async def follow(self) -> None:
        """Apply the agent's policy ops until it says shutdown (or goes away)."""
        while True:
            message = await read_message(self.reader)
            if message is None:
                log.error("the agent went away; shutting down")
                self.grace_s = min(self.grace_s, 5.0)
                break
            if message["op"] == "shutdown":
                self.grace_s = float(message.get("grace_s", self.grace_s))
                break
            await self.apply(message)
        self.stop.set()


async def run_worker(index: int, control_fd: int, listen_fd: int) -> int:
    reader, writer = await open_channel(socket.socket(fileno=control_fd))
    hello = await read_message(reader)
    if hello is None or hello.get("op") != "hello":
        print("worker: no hello from the agent", file=sys.stderr)
        return 2
    config = config_from_wire(hello["config"])
    configure_logging(config.log_level, config.log_format, f"worker-{index}")
    map_large_buffers()
    worker = WorkerProcess(index, reader, writer)
    worker.grace_s = config.shutdown_grace_s
    if hello.get("policy"):
        # Serve with the agent's policy from the first request on, never with none.
        while not worker.store.current().loaded:
            message = await read_message(reader)
            if message is None or message["op"] == "shutdown":
                return 2
            await worker.apply(message)
    listen = socket.socket(fileno=listen_fd)
    listen.setblocking(False)
    settings = proxy_settings(config, int(listen.getsockname()[1]))
    server = await start_eas_server(
        settings,
        worker.store,
        worker.events,
        sock=listen,
        metrics=worker.metrics,
        tune_gc=True,  # a worker only serves EAS: see proxy.collector
    )
    follow_policy(worker.store, server)  # a block ends the device's held requests
    worker.pace = REPLACEMENT_DUTY_PAUSE
    if server.collector is not None:
        worker.adopt = server.collector.adopt_survivors
    # The channel's socket transport reads as well (uvloop's transports do not
    # register as ``asyncio.Transport``, hence the cast).
    worker.reading = cast(asyncio.Transport, writer.transport)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop.set)
    worker.send({"op": "ready", "pid": os.getpid(), "index": index})
    tasks = [
        asyncio.create_task(worker.pump(config.event_flush_interval_s)),
        asyncio.create_task(worker.follow()),
    ]
    await worker.stop.wait()
    await server.close(worker.grace_s)
    for task in tasks:
        task.cancel()
    worker.send_events(worker.events.take_all())
    worker.send_metrics()
    worker.send({"op": "bye"})
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.drain(), 5)
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onprem_gateway.agent.worker_process")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the agent coordinates the shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    main_coro = run_worker(args.index, args.control_fd, args.listen_fd)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is in the gateway extra
        return asyncio.run(main_coro)
    return uvloop.run(main_coro)


if __name__ == "__main__":
    sys.exit(main())
