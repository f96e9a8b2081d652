"""The wire between the agent and its worker processes: JSON lines over a Unix socketpair.

agent -> worker::

    {"op": "hello", "config": {...}, "policy": true}     first line: the node's config;
                                                         "policy": a replacement follows
    {"op": "delta"|"push"|"confirm", "confirmed_at": t, "body": true}
    <the body: the contract model's JSON on one line>    a PolicyOp (policy_store.PolicyOp)
    {"op": "begin", "devices": n, "credentials": m, "body": true}   a whole policy
    <ReplacementHead JSON>                               in parts (snapshot_parts.py):
                                                         the index's header,
    {"op": "part", "seq": 0, "body": true}               then parts 0..N-1 of at most
    <{"devices": [...], "credentials": [...]}>           PART_ENTRIES entries each, then
    {"op": "commit", "parts": N, "version": 42}          the swap; in between only
                                                         pushes (applied at once and
                                                         again after the swap)
    {"op": "shutdown", "grace_s": 30}                    drain and exit

worker -> agent::

    {"op": "ready", "pid": 123, "index": 0}              the EAS listener is serving
    {"op": "applied", "version": 42}                     after every policy op (for a
                                                         replacement: once swapped in)
    {"op": "refused", "version": 41, "error": "..."}     a replacement it could not use:
                                                         it keeps version 41, ignores
                                                         policy ops until the next begin
    {"op": "events", "body": true}                       every flush interval, then
    <a JSON array of AccessEvent on one line>            at most EVENTS_PER_MESSAGE
    {"op": "metrics", "data": ProxyMetrics.snapshot(), "version": 42}   every second
    {"op": "bye"}                                        after the final flush

The first policy a worker receives is a replacement with the agent's current policy,
applied before the worker starts serving; every later change is replayed as the op the
agent applied (a refreshed snapshot as the delta it amounts to, ``compact_op``), so a
worker applies a push within a millisecond of the agent. A change that is no delta (a
replacement after a diverged digest, a snapshot that drops entries) reaches the worker
as a replacement in parts, which it assembles between requests; the agent sends the
messages in the order of the changes (only a push with nothing ahead of it goes out
between two parts of a replacement, ``policy_outbox``), and sends a replacement again to
a worker that refused one.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from pydantic import TypeAdapter

from onprem_gateway.agent.policy_store import PolicyOp
from seg_contract import AccessEvent

# The longest line: a flush of events, a replacement's part (~250 KB) or a large delta.
MAX_LINE = 512 * 1024 * 1024


# A flush is sent in messages of at most this many events, the worker's event loop
# serving requests between two of them: each costs ~0.25 ms to encode, where a 200 ms
# flush of a busy worker's ~1,000 events at once stalled its requests for ~3 ms.
EVENTS_PER_MESSAGE = 256

# Events cross as one JSON array encoded and validated by pydantic-core in one call
# (~1 µs an event each way, against ~3 µs a model with ``json`` per event).
_EVENT_LIST: TypeAdapter[list[AccessEvent]] = TypeAdapter(list[AccessEvent])
_EVENTS_HEADER = b'{"op":"events","body":true}\n'


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def encode_events(events: list[AccessEvent]) -> bytes:
    """An ``events`` message: its header line and the events' array."""
    return _EVENTS_HEADER + _EVENT_LIST.dump_json(events) + b"\n"


async def read_events(reader: asyncio.StreamReader) -> list[AccessEvent] | None:
    """The events whose header line was just read; None at end of stream. Raises
    ``pydantic.ValidationError`` for a body that is not a valid list of events."""
    try:
        body = await reader.readline()
    except (ConnectionError, ValueError):  # incl. LimitOverrunError: the stream is broken
        return None
    if not body:
        return None
    return _EVENT_LIST.validate_json(body)


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


async def read_body(reader: asyncio.StreamReader) -> bytes | None:
    """The body line of the message whose header was just read; None at end of stream."""
    try:
        body = await reader.readline()
    except (ConnectionError, ValueError):
        return None
    return body or None


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
