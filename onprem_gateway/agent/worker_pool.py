"""The multi-process runner: ``workers`` child processes serve EAS on one port.

The agent (this process) resolves the listen port with a placeholder socket (bound with
SO_REUSEPORT, never listening, so it never receives a connection but keeps the port
ours), then gives each worker its own listening SO_REUSEPORT socket on that port: the
kernel spreads new connections across the workers, and a dying worker takes only its
own accept queue with it. Each worker gets a private socketpair (``channel.py``): the
agent writes its config, the current policy and then every policy op; the worker sends
access events, metrics and acknowledgements back.

Policy messages leave in the order of the changes through one ``PolicyOutbox``: an
op's lines, or a whole policy (a worker's first, a replacement, one a worker refused
sent again) as a replacement in parts (``snapshot_parts``), so that neither the agent
nor a worker stalls on a large policy.

A worker that exits unexpectedly is restarted (after a short delay); at shutdown every
worker drains its held requests up to the grace period and sends its last events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import onprem_gateway
from onprem_gateway.agent.channel import encode, open_channel, read_events, read_message
from onprem_gateway.agent.eas_runner import listen_socket
from onprem_gateway.agent.policy_outbox import PolicyOutbox
from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore, compact_op
from onprem_gateway.agent.snapshot_parts import replacement_lines
from onprem_gateway.config import GatewayConfig
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.ports import EventSink

log = logging.getLogger(__name__)

# The worker imports this very package, wherever it was imported from.
_PACKAGE_ROOT = str(Path(onprem_gateway.__file__).resolve().parent.parent)
READY_TIMEOUT_S = 30.0
RESTART_DELAY_S = 1.0
# A worker that refuses the replacement sent again is restarted instead (it then gets
# the policy as a new worker does): a third try would only fail the same way.
MAX_REFUSALS = 1


@dataclass
class WorkerHandle:
    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    policy_version: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    started_at: float = 0.0
    joined: int = 0  # the first outbox message this worker (as started last) gets
    refusals: int = 0  # replacements refused in a row

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class WorkerPool:
    def __init__(
        self, config: GatewayConfig, store: PolicyStore, sink: EventSink, count: int
    ) -> None:
        self._config = config
        self._store = store
        self._sink = sink
        self._count = count
        self._workers = [WorkerHandle(i) for i in range(count)]
        self._placeholder: socket.socket | None = None
        self._closing = False
        self._replicated = store.current()  # what every worker holds once caught up
        self._restart_tasks: set[asyncio.Task[None]] = set()
        self._outbox = PolicyOutbox(lambda: self._workers)
        self._sender: asyncio.Task[None] | None = None
        self.port = 0
        store.subscribe(self._on_policy_change)

    # --- start --------------------------------------------------------------------------

    async def start(self) -> int:
        self._placeholder = listen_socket(
            self._config.listen_host, self._config.listen_port, reuse_port=True, listen=False
        )
        self.port = int(self._placeholder.getsockname()[1])
        self._sender = asyncio.create_task(self._outbox.run())
        for handle in self._workers:
            await self._spawn(handle)
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                for handle in self._workers:
                    await handle.ready.wait()
        except TimeoutError:
            raise RuntimeError("EAS worker processes did not start in time") from None
        log.info("%d EAS workers serving on port %d", self._count, self.port)
        return self.port

    async def _spawn(self, handle: WorkerHandle) -> None:
        listen = listen_socket(self._config.listen_host, self.port, reuse_port=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        try:
            handle.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "onprem_gateway.agent.worker_process",
                "--index",
                str(handle.index),
                "--control-fd",
                str(theirs.fileno()),
                "--listen-fd",
                str(listen.fileno()),
                pass_fds=(theirs.fileno(), listen.fileno()),
                env=env,
            )
        finally:
            theirs.close()
            listen.close()  # the worker holds its own copy; ours would only leak
        reader, writer = await open_channel(ours)
        handle.ready = asyncio.Event()
        handle.started_at = time.time()
        index = self._store.current()
        hello = {"op": "hello", "config": self._config.to_wire(), "policy": index.loaded}
        writer.write(encode(hello))
        self._replicated = index
        # From here on every policy change reaches this worker, in order.
        handle.writer = writer
        handle.joined = self._outbox.next_seq
        handle.refusals = 0
        if index.loaded:
            self._outbox.post(replacement_lines(index), target=handle)
        handle.reader_task = asyncio.create_task(self._read(handle, reader))

    # --- policy fan-out -------------------------------------------------------------------

    def _on_policy_change(self, op: PolicyOp, index: PolicyIndex) -> None:
        before, self._replicated = self._replicated, index
        writers = [h.writer for h in self._workers if h.writer and not h.writer.is_closing()]
        if not writers:
            return
        compact = compact_op(op, before, index)
        if compact.kind in ("snapshot", "replace"):
            self._outbox.post(replacement_lines(index))
        else:
            self._outbox.post(compact.to_lines(), push=compact.kind == "push")

    # --- messages from workers ----------------------------------------------------------

    async def _read(self, handle: WorkerHandle, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await read_message(reader)
            except ValueError:
                log.error("worker %d sent a malformed message", handle.index)
                continue
            if message is None or message["op"] == "bye":
                break
            if message["op"] == "events":
                try:
                    events = await read_events(reader)
                except ValidationError:
                    log.error("worker %d sent invalid access events", handle.index)
                    continue
                if events is None:
                    break
                for event in events:
                    self._sink.record(event)
                continue
            self._on_message(handle, message)
        if handle.writer is not None:
            handle.writer.close()
            handle.writer = None
        if handle.process is not None:
            await handle.process.wait()
        if not self._closing:
            code = handle.process.returncode if handle.process else None
            log.error("worker %d exited unexpectedly (code %s); restarting", handle.index, code)
            task = asyncio.create_task(self._restart(handle))
            self._restart_tasks.add(task)
            task.add_done_callback(self._restart_tasks.discard)

    def _on_message(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "metrics":
            handle.metrics = message.get("data", {})
            handle.policy_version = int(message.get("version", handle.policy_version))
        elif op == "applied":
            handle.policy_version = int(message["version"])
            handle.refusals = 0
        elif op == "refused":
            self._on_refused(handle, message)
        elif op == "ready":
            handle.ready.set()
            log.info("worker %d ready (pid %s)", handle.index, message.get("pid"))

    def _on_refused(self, handle: WorkerHandle, message: dict[str, Any]) -> None:
        handle.refusals += 1
        error = message.get("error")
        if handle.refusals > MAX_REFUSALS or handle.process is None:
            log.error(
                "worker %d refused the policy replacement again (%s); restarting it",
                handle.index,
                error,
            )
            if handle.running and handle.process is not None:
                handle.process.kill()
            return
        log.error(
            "worker %d refused a policy replacement (%s); sending it the policy again",
            handle.index,
            error,
        )
        self._outbox.post(replacement_lines(self._store.current()), target=handle)

    async def _restart(self, handle: WorkerHandle) -> None:
        await asyncio.sleep(RESTART_DELAY_S)
        if self._closing:
            return
        handle.restarts += 1
        try:
            await self._spawn(handle)
        except OSError:
            log.exception("could not restart worker %d", handle.index)

    # --- state for health and metrics -----------------------------------------------------

    def proxy_metrics_list(self) -> list[dict[str, Any]]:
        return [h.metrics for h in self._workers if h.metrics]

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "index": h.index,
                "pid": h.process.pid if h.process else None,
                "running": h.running,
                "ready": h.ready.is_set(),
                "policy_version": h.policy_version,
                "restarts": h.restarts,
            }
            for h in self._workers
        ]

    def problems(self) -> list[str]:
        down = [h.index for h in self._workers if not (h.running and h.ready.is_set())]
        return [f"EAS worker(s) {down} not running"] if down else []

    # --- shutdown -----------------------------------------------------------------------

    async def close(self, grace_s: float) -> None:
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()  # a shutdown must not land inside a replacement's parts
        for task in list(self._restart_tasks):
            task.cancel()
        for handle in self._workers:
            if handle.writer is not None and not handle.writer.is_closing():
                handle.writer.write(encode({"op": "shutdown", "grace_s": grace_s}))
        readers = [h.reader_task for h in self._workers if h.reader_task is not None]
        if readers:
            _done, pending = await asyncio.wait(readers, timeout=grace_s + 10)
            for task in pending:
                task.cancel()
        for handle in self._workers:
            if handle.running and handle.process is not None:
                log.warning("worker %d did not exit in time; killing it", handle.index)
                handle.process.kill()
                with contextlib.suppress(Exception):
                    await handle.process.wait()
        if self._placeholder is not None:
            self._placeholder.close()
