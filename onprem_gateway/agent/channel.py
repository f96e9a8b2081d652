"""The wire between the agent and its worker processes: JSON lines over a Unix socketpair.

agent -> worker::

    {"op": "hello", "config": {...}, "policy": true}     first line: the node's config;
                                                         "policy": a snapshot op follows
    {"op": "snapshot"|"replace"|"delta"|"push"|"confirm", "confirmed_at": t, "body": true}
    <the body: the contract model's JSON on one line>    a PolicyOp (policy_store.PolicyOp)
    {"op": "shutdown", "grace_s": 30}                    drain and exit

worker -> agent::

    {"op": "ready", "pid": 123, "index": 0}              the EAS listener is serving
    {"op": "applied", "version": 42}                     after every policy op
    {"op": "events", "events": [AccessEvent, ...]}       every flush interval
    {"op": "metrics", "data": ProxyMetrics.snapshot(), "version": 42}   every second
    {"op": "bye"}                                        after the final flush

The first policy op a worker receives is a full snapshot of the agent's current policy,
applied before the worker starts serving; every later change is replayed as the op the
agent applied (a refreshed snapshot as the delta it amounts to, ``compact_op``), so a
worker applies a push within a millisecond of the agent.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from onprem_gateway.agent.policy_store import PolicyOp

# A snapshot of 100,000 devices is ~40 MB of JSON on one line.
MAX_LINE = 512 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


async def open_channel(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)


async def read_policy_op(reader: asyncio.StreamReader, header: dict[str, Any]) -> PolicyOp | None:
    """The PolicyOp whose header line was just read (reads its body line)."""
    body = None
    if header.get("body"):
        body = await reader.readline()
        if not body:
            return None
    return PolicyOp.from_lines(header, body)


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message; None at end of stream (the other side is gone)."""
    try:
        line = await reader.readline()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        return None
    if not line:
        return None
    message = json.loads(line)
    if not isinstance(message, dict) or "op" not in message:
        raise ValueError("channel message without an op")
    return message
