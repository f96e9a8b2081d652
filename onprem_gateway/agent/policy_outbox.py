"""The agent's policy messages to its workers, written in the order of the changes.

An op's lines (a push, a delta, a confirmation) are written at once when nothing is
ahead of them, so a push reaches the workers within a millisecond. A whole policy
(``snapshot_parts.replacement_lines``) is written one message per event-loop turn by
``PolicyOutbox.run``: encoding and writing 200 parts never stalls the agent. It is
written no faster than the workers take it: the next message waits until every
recipient has read the last one but ~64 KiB (``drain``; one that has not for
``STALLED_AFTER_S`` is no longer waited for). What is posted meanwhile waits for the
replacement's last part (a worker applies the changes in the order the agent made
them), except a push with nothing ahead of it: that is written between two parts at
once, so a block reaches a worker assembling a 100,000-device policy (2-4 s, paced)
within a part or two instead of after the swap. The worker applies it to the policy
it decides with and again to the new one once swapped in (``worker_process``).

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


# How long a replacement's next message waits for a recipient that has not read the
# last one before the others go on without waiting for it (a stuck worker must not hold
# up the others; what it is sent meanwhile stays in its buffer, as before pacing).
STALLED_AFTER_S = 5.0


class LineWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    async def drain(self) -> None: ...


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

    def post(
        self,
        lines: bytes | Iterator[bytes],
        target: Recipient | None = None,
        *,
        push: bool = False,
    ) -> None:
        """Send ``lines`` (an op's, or a replacement's messages) to every recipient, or
        to ``target`` only. ``push``: the lines are a push, which may go out between
        two parts of a replacement (see the module's docstring)."""
        item = Outgoing(self._next_seq, lines, target)
        self._next_seq += 1
        if isinstance(lines, bytes) and not self._queue and (push or not self._sending):
            self._write(item, lines)  # nothing ahead of it: it leaves at once
            return
        self._queue.append(item)
        self._ready.set()

    def _writers(self, item: Outgoing) -> list[LineWriter]:
        """Of every recipient that joined before ``item`` was posted (asked again for
        each part: one restarted meanwhile got the whole policy instead)."""
        out = []
        for recipient in (item.target,) if item.target is not None else self._recipients():
            writer = recipient.writer
            if writer is not None and not writer.is_closing() and recipient.joined <= item.seq:
                out.append(writer)
        return out

    def _write(self, item: Outgoing, lines: bytes) -> list[LineWriter]:
        writers = self._writers(item)
        for writer in writers:
            writer.write(lines)
        return writers

    async def _taken(self, writers: list[LineWriter], stalled: set[LineWriter]) -> None:
        """Until every writer's reader took what was written but ~64 KiB; a writer that
        has not after ``STALLED_AFTER_S`` joins ``stalled`` and is not waited for again."""
        waiting = [w for w in writers if w not in stalled]
        if not waiting:
            return
        drains = {asyncio.ensure_future(w.drain()): w for w in waiting}
        try:
            done, pending = await asyncio.wait(drains, timeout=STALLED_AFTER_S)
        finally:  # also when the outbox is stopped meanwhile: no drain is left behind
            for future in drains:
                future.cancel()
        for future in done:
            future.exception()  # a closed channel: its worker is being restarted
        for future in pending:
            stalled.add(drains[future])
            log.warning("a worker has not read the policy sent %g s ago", STALLED_AFTER_S)

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
                    stalled: set[LineWriter] = set()
                    for lines in item.lines:
                        await self._taken(self._write(item, lines), stalled)
                        await asyncio.sleep(0)
                except Exception:  # one broken message must not stop every later one
                    log.exception("policy message %d for the workers failed", item.seq)
                finally:
                    self._sending = False
