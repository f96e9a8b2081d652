"""Counting failures per key in fixed windows, to refuse guessing before it costs CPU.

A wrong device password (PW1) is detected only by an scrypt verification (~1 s of CPU
per guess). ``FailureLimiter`` counts failures per user and per device; once a key has
``max_failures`` in its current window, further attempts are refused *before* hashing
until the window ends. The clock is a parameter (tests drive it); memory is bounded
(the oldest keys are forgotten first, which can only make the limiter more lenient).
"""

from __future__ import annotations

from collections.abc import Iterable


class FailureLimiter:
    __slots__ = ("_counts", "_max_failures", "_max_keys", "_window_s")

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 100_000) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._max_keys = max_keys
        # key -> [window start, failures in it]
        self._counts: dict[str, list[float]] = {}

    def limited(self, keys: Iterable[str], now: float) -> bool:
        """Whether any of ``keys`` has used up its failures in the current window."""
        for key in keys:
            held = self._counts.get(key)
            if held is None:
                continue
            if now - held[0] >= self._window_s:
                del self._counts[key]
            elif held[1] >= self._max_failures:
                return True
        return False

    def failed(self, keys: Iterable[str], now: float) -> None:
        """Count one failure against each of ``keys``."""
        counts = self._counts
        for key in keys:
            held = counts.get(key)
            if held is None or now - held[0] >= self._window_s:
                if held is None and len(counts) >= self._max_keys:
                    del counts[next(iter(counts))]
                counts[key] = [now, 1.0]
            else:
                held[1] += 1

    def __len__(self) -> int:
        return len(self._counts)
