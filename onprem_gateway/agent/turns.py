"""Long jobs on an event loop, a slice per turn, so that a push or a keepalive that
arrives meanwhile waits for one slice, not the whole job.

- ``in_turns`` runs work written as steps (``core.steps``): the agent parses, indexes
  and compares a 100,000-device policy this way.
- ``release_gradually`` lets a whole policy go. When the last reference to a
  100,000-device policy goes, CPython frees every entry in that one moment: ~25-30 ms
  in which nothing else runs. The agent (after it takes a fetched snapshot or a
  re-read policy file) and a worker (after it swaps in a replacement) hand the policy
  they no longer use to ``release_gradually`` instead, holding no other reference to
  it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import islice
from typing import TypeVar

from onprem_gateway.core.steps import Steps

T = TypeVar("T")

# Objects gathered, then freed, per event-loop turn: freeing 100,000 entries at once
# holds the loop for ~25 ms, and listing the 200,000 keys and entries of one ~6 ms;
# 4,000 take ~1 ms to free.
RELEASE_SLICE = 4000


async def release_gradually(references: Iterator[object]) -> None:
    """Free what a policy no longer used holds, the event loop free between two slices:
    first hold every object ``references`` yields (``PolicyIndex.references``), then
    let the iterator, and with it the policy's tables, go (~1 ms: their objects are
    still held), then drop the objects a slice at a time. If something else still
    holds the policy, nothing is freed here and nothing breaks."""
    held: list[object] = []
    while chunk := list(islice(references, RELEASE_SLICE)):
        held += chunk
        await asyncio.sleep(0)
    del references
    await asyncio.sleep(0)
    while held:
        del held[-RELEASE_SLICE:]
        await asyncio.sleep(0)


async def in_turns(steps: Steps[T]) -> T:
    """Run ``steps`` a step per event-loop turn and return the result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)
