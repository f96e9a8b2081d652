"""The agent's policy messages to its workers, written in the order of the changes.

An op's lines (a push, a delta, a confirmation) are written at once when nothing is
ahead of them, so a push reaches the workers within a millisecond. A whole policy
(``snapshot_parts.replacement_lines``) is written one message per event-loop turn by
``PolicyOutbox.run``: encoding and writing 100 parts never stalls the agent, and what is
posted meanwhile waits for the replacement's last part (a worker never sees an op in the
middle of a replacement, and applies the changes in the order the agent made them).

Every message goes to the recipients that had joined when it was posted (``joined``,
the sequence number of the first message a worker, as started last, gets): a worker
(re)started meanwhile was sent the whole current policy as its own first message and
must not get the rest of a replacement it never saw begin.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class LineWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...


class Recipient(Protocol):
    @property
    def joined(self) -> int: ...

    @property
    def writer(self) -> LineWriter | None: ...


@dataclass(frozen=True)
class Outgoing:
    """One policy message: an op's lines, or a replacement's messages made one at a
    time. ``target``: that recipient only (its first policy, a policy sent again)."""

    seq: int
    lines: bytes | Iterator[bytes]
    target: Recipient | None = None


class PolicyOutbox:
    def __init__(self, recipients: Callable[[], Iterable[Recipient]]) -> None:
        self._recipients = recipients
        self._queue: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._next_seq = 0
        self._sending = False

    @property
    def next_seq(self) -> int:
        """The sequence number the next message posted gets."""
        return self._next_seq

    def post(self, lines: bytes | Iterator[bytes], target: Recipient | None = None) -> None:
        item = Outgoing(self._next_seq, lines, target)
        self._next_seq += 1
        if isinstance(lines, bytes) and not self._queue and not self._sending:
            self._write(item, lines)  # nothing ahead of it: it leaves at once
            return
        self._queue.append(item)
        self._ready.set()

    def _write(self, item: Outgoing, lines: bytes) -> None:
        """To every recipient that joined before ``item`` was posted (asked again for
        each part: one restarted meanwhile got the whole policy instead)."""
        for recipient in (item.target,) if item.target is not None else self._recipients():
            writer = recipient.writer
            if writer is not None and not writer.is_closing() and recipient.joined <= item.seq:
                writer.write(lines)

    async def run(self) -> None:
        """Write what is posted, a replacement one message per event-loop turn."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                item = self._queue.popleft()
                self._sending = True
                try:
                    if isinstance(item.lines, bytes):
                        self._write(item, item.lines)
                        continue
                    for lines in item.lines:
                        self._write(item, lines)
                        await asyncio.sleep(0)
                except Exception:  # one broken message must not stop every later one
                    log.exception("policy message %d for the workers failed", item.seq)
                finally:
                    self._sending = False
