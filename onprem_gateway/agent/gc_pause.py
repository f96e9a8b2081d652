"""The cyclic garbage collector held off while a whole policy is parsed and indexed.

Parsing a 100,000-device snapshot creates ~400,000 objects that live until the next
one. With the collector's default thresholds it ran ~570 times during the parse (young
passes, then full passes over both the old and the new policy, up to ~150 ms each),
which more than doubled the parse: 590 ms with it, 225 ms without. The new objects are
then moved out of its reach (``gc.freeze``, as a worker's collector does with whatever
lives longer than a moment: ``proxy.collector``); left in, the first young pass after the
parse walked them all (~90 ms), and the full passes after it again. The price: cyclic
garbage still uncollected at that moment is never collected, once per whole policy.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the collector off for the block, then freeze what exists (even on error:
    what a failed parse made is freed by reference counting all the same)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
