"""Reconnect delays for the control-plane link, as a pure generator.

After websockets' ``backoff()``: the first retry comes quickly (a blip should heal in
seconds), then delays grow exponentially up to a cap, and every delay is drawn uniformly
from [0, ceiling] ("full jitter", AWS Architecture Blog, *Exponential Backoff and
Jitter*) so a fleet of gateway nodes that lost the control plane together does not
reconnect in lock-step. The caller sleeps; the random source is injectable so tests are
deterministic.

``classify`` sorts connection failures into retry-with-backoff versus stop: a revoked or
refused credential will not start working by retrying. Only a 401/403 the control plane
marks as its own (``seg_contract.http.CREDENTIAL_REJECTED_HEADER``) is a refusal of the
credential; an unmarked one came from a proxy, a WAF or a captive portal in the path and
is retried, or first confirmed with the control plane where the mark may have been lost
on the way (API Gateway's WebSocket handshake).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from enum import StrEnum

INITIAL_DELAY_S = 1.0
MIN_DELAY_S = 0.5
FACTOR = 1.618  # websockets' default growth; doubles roughly every 1.5 attempts
MAX_DELAY_S = 90.0  # one minute and a half: a long outage costs at most that much extra


def backoff(
    *,
    initial_delay: float = INITIAL_DELAY_S,
    min_delay: float = MIN_DELAY_S,
    factor: float = FACTOR,
    max_delay: float = MAX_DELAY_S,
    uniform: Callable[[float, float], float] | None = None,
) -> Iterator[float]:
    """Yield an endless sequence of delays in seconds: the n-th is drawn from
    ``[min_delay, min(max_delay, initial_delay * factor**n)]`` (never below
    ``min_delay``, never above ``max_delay``)."""
    if not 0 < min_delay <= initial_delay <= max_delay:
        raise ValueError("need 0 < min_delay <= initial_delay <= max_delay")
    if factor < 1:
        raise ValueError("factor must be >= 1")
    draw = uniform if uniform is not None else random.SystemRandom().uniform
    ceiling = initial_delay
    while True:
        yield min(max_delay, max(min_delay, draw(min_delay, ceiling)))
        ceiling = min(max_delay, ceiling * factor)


class Retry(StrEnum):
    BACKOFF = "backoff"  # transient: network, 5xx, 429, timeouts, an unmarked 401/403
    STOP = "stop"  # fatal until an operator acts: the control plane refused the credential
    CONFIRM = "confirm"  # an unmarked 401/403 where the mark can be lost: ask the API


def classify(http_status: int | None, *, marked: bool, confirmable: bool = False) -> Retry:
    """What to do after a failed connection attempt. ``http_status`` is the status of a
    refused WebSocket handshake or HTTP call, None for a network-level failure;
    ``marked``: the answer carried the control plane's credential-rejected header;
    ``confirmable``: an unmarked 401/403 is to be confirmed with one HTTP call (whose
    answer keeps its headers) instead of being retried blindly."""
    if http_status in (401, 403):
        if marked:
            return Retry.STOP
        return Retry.CONFIRM if confirmable else Retry.BACKOFF
    return Retry.BACKOFF
