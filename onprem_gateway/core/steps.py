"""Work done in steps: a generator that yields between slices of a long job and
returns its result. The agent runs one step per event-loop turn (``agent.policy_sync``),
so a push or a keepalive waits for one slice, not the whole job; elsewhere (a policy
file read in a thread, the journal at start) the steps run back to back."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

Steps = Generator[None, None, T]


def finish(steps: Steps[T]) -> T:
    """Run every step and return the result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
