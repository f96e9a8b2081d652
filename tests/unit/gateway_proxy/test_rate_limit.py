"""The failure limiter: fixed windows per key, bounded memory."""

from __future__ import annotations

from onprem_gateway.proxy.rate_limit import FailureLimiter


def test_a_key_is_limited_after_its_failures_until_the_window_ends() -> None:
    limiter = FailureLimiter(max_failures=2, window_s=10.0)
    assert not limiter.limited(["u:a"], 0.0)
    limiter.failed(["u:a", "d:1"], 0.0)
    assert not limiter.limited(["u:a"], 1.0)
    limiter.failed(["u:a", "d:2"], 1.0)
    assert limiter.limited(["u:a"], 2.0)
    assert limiter.limited(["u:b", "u:a"], 2.0)  # any of the keys
    assert not limiter.limited(["d:1"], 2.0) and not limiter.limited(["u:b"], 2.0)
    assert not limiter.limited(["u:a"], 10.5)  # the window started at 0.0


def test_memory_is_bounded_by_forgetting_the_oldest_keys() -> None:
    limiter = FailureLimiter(max_failures=1, window_s=100.0, max_keys=3)
    for i in range(10):
        limiter.failed([f"k{i}"], 0.0)
    assert len(limiter) == 3
    assert limiter.limited(["k9"], 1.0) and not limiter.limited(["k0"], 1.0)
