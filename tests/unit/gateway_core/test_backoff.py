"""Reconnect backoff: bounds, growth, cap, jitter, classification."""

from __future__ import annotations

import itertools
import random

import pytest

from onprem_gateway.core.backoff import Retry, backoff, classify


def test_upper_bound_grows_exponentially_to_the_cap() -> None:
    ceilings = list(itertools.islice(backoff(uniform=lambda _lo, hi: hi), 12))
    assert ceilings[0] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(ceilings))
    assert ceilings[1] == pytest.approx(1.618)
    assert ceilings[-1] == 90.0


def test_lower_bound_is_min_delay() -> None:
    floors = list(itertools.islice(backoff(uniform=lambda lo, _hi: lo), 10))
    assert floors == [0.5] * 10


def test_full_jitter_stays_within_bounds_over_many_draws() -> None:
    rng = random.Random(7)
    delays = list(itertools.islice(backoff(uniform=rng.uniform), 500))
    assert all(0.5 <= d <= 90.0 for d in delays)
    late = delays[50:]
    assert len({round(d, 3) for d in late}) > 100  # jittered, not lock-step
    assert max(late) > 60 and min(late) < 30


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        next(backoff(min_delay=2, initial_delay=1))
    with pytest.raises(ValueError):
        next(backoff(factor=0.5))


@pytest.mark.parametrize(
    ("status", "marked", "confirmable", "retry"),
    [
        # Only the control plane's own refusal (the X-SEG-Credential mark) stops the link.
        (401, True, False, Retry.STOP),
        (403, True, True, Retry.STOP),
        # Unmarked: a proxy or WAF in the path; retried, or confirmed where the mark can
        # be lost (the WebSocket handshake through API Gateway).
        (401, False, False, Retry.BACKOFF),
        (403, False, False, Retry.BACKOFF),
        (401, False, True, Retry.CONFIRM),
        (403, False, True, Retry.CONFIRM),
        (None, False, True, Retry.BACKOFF),
        (500, True, True, Retry.BACKOFF),
        (429, False, False, Retry.BACKOFF),
        (502, False, True, Retry.BACKOFF),
    ],
)
def test_classify(status: int | None, marked: bool, confirmable: bool, retry: Retry) -> None:
    assert classify(status, marked=marked, confirmable=confirmable) is retry
