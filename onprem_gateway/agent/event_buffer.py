"""``EventBuffer``: the ``EventSink`` the data path records access events into, in the
agent and in every worker process.

An append on the request path (handing each event to a thread or a queue was measured
at ~6x its cost). The agent's ``Reporter`` takes what it holds to the spool; a worker
ships it to the agent over its channel. Its own module so that a worker imports none of
the agent's shipping code (``reporter.py`` and, through it, the HTTP client).
"""

from __future__ import annotations

import asyncio

from seg_contract import AccessEvent

BATCH_SIZE = 500  # AccessEventBatch.events max_length


class EventBuffer:
    """The ``EventSink``: never blocks, never raises. Bounded: if the reporter cannot keep
    up (it always can, unless the disk is gone), the oldest events are dropped and
    counted rather than growing without limit."""

    def __init__(self, max_events: int = 200_000) -> None:
        self._events: list[AccessEvent] = []
        self._max_events = max_events
        self._full: asyncio.Event | None = None
        self.recorded = 0
        self.dropped = 0

    def record(self, event: AccessEvent) -> None:
        self._events.append(event)
        self.recorded += 1
        if len(self._events) >= BATCH_SIZE and self._full is not None:
            self._full.set()
        if len(self._events) > self._max_events:
            self._trim()

    def _trim(self) -> None:
        excess = len(self._events) - self._max_events
        del self._events[:excess]
        self.dropped += excess

    def __len__(self) -> int:
        return len(self._events)

    def take_all(self) -> list[AccessEvent]:
        events, self._events = self._events, []
        return events

    def put_back(self, events: list[AccessEvent]) -> None:
        """Events ``take_all`` returned that could not be spooled: first in line again."""
        self._events[:0] = events
        if len(self._events) > self._max_events:
            self._trim()

    def full_event(self) -> asyncio.Event:
        if self._full is None:
            self._full = asyncio.Event()
        return self._full
