"""Plain counters the data path updates on the request path and the node agent exports.

Updating is a dict lookup and an integer add (no locks: one event loop per process).
The agent reads ``snapshot()`` (JSON-able) from each worker process and adds them up
with ``merge``; the Prometheus rendering is the agent's business.

Names (what the agent exports):
- ``requests``: ``{"<command>|<decision>|<enforced>": count}`` — one per EAS request,
  decision = what the policy said, enforced = False in test mode.
- ``responses``: ``{"<status>": count}`` — statuses sent to devices.
- ``upstream_latency``: per command, a histogram of seconds from the request head sent
  upstream to the response head received (``UPSTREAM_BUCKETS`` upper bounds, the last
  bucket is +Inf), with ``sum`` and ``count``.
- ``upstream_errors``: ``{"<kind>": count}`` (refused, timeout, tls, reset, protocol).
- ``connections_refused``: connections closed at accept (over ``max_connections``).
- ``connections_refused_per_ip``: connections refused over ``max_connections_per_ip``.
- ``revoked``: ``{"answered" | "closed": count}`` — in-flight requests a policy change
  ended: answered with the blocked answer, or cut because their answer had started.
- ``pw1_limited``: device-password attempts refused without hashing (rate limit).
- ``header_timeouts``: connections cut with 408 at the request-head deadline.
- ``gc_passes``, ``gc_pass_seconds``, ``gc_slow_passes``: the cyclic collector's passes,
  their time, those over 5 ms (``collector.py``).
- gauges: ``connections`` (open client connections), ``in_flight`` (requests being
  answered), ``held`` (in-flight Ping / Sync long-polls), ``upstream_idle`` (pooled).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

UPSTREAM_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    60.0,
    600.0,
    3600.0,
)


class ProxyMetrics:
    __slots__ = (
        "connections",
        "connections_refused",
        "connections_refused_per_ip",
        "gc_pass_seconds",
        "gc_passes",
        "gc_slow_passes",
        "header_timeouts",
        "held",
        "in_flight",
        "pw1_limited",
        "requests",
        "responses",
        "revoked",
        "upstream_errors",
        "upstream_idle",
        "upstream_latency",
    )

    def __init__(self) -> None:
        # Keyed by values, not by the "command|decision|enforced" / "200" text the
        # snapshot carries: formatting a key for every request cost more than counting.
        self.requests: dict[tuple[str, str, bool], int] = {}
        self.responses: dict[int, int] = {}
        self.upstream_errors: dict[str, int] = {}
        # command -> [bucket counts..., +Inf count, sum (float), count]
        self.upstream_latency: dict[str, list[float]] = {}
        self.connections = 0
        self.connections_refused = 0
        self.connections_refused_per_ip = 0
        self.header_timeouts = 0
        self.pw1_limited = 0
        self.revoked: dict[str, int] = {}
        self.in_flight = 0
        self.held = 0
        self.upstream_idle = 0
        # The cyclic collector (``collector.py``; a node worker only).
        self.gc_passes = 0
        self.gc_pass_seconds = 0.0
        self.gc_slow_passes = 0

    def count_request(self, command: str, decision: str, enforced: bool) -> None:
        key = (command, decision, enforced)
        self.requests[key] = self.requests.get(key, 0) + 1

    def count_response(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def count_revoked(self, outcome: str) -> None:
        self.revoked[outcome] = self.revoked.get(outcome, 0) + 1

    def count_upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1

    def observe_upstream(self, command: str, seconds: float) -> None:
        hist = self.upstream_latency.get(command)
        if hist is None:
            hist = self.upstream_latency[command] = [0.0] * (len(UPSTREAM_BUCKETS) + 3)
        hist[bisect_left(UPSTREAM_BUCKETS, seconds)] += 1
        hist[-2] += seconds
        hist[-1] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy (what a worker process reports to the agent)."""
        return {
            "requests": {
                f"{command}|{decision}|{'true' if enforced else 'false'}": count
                for (command, decision, enforced), count in self.requests.items()
            },
            "responses": {str(status): count for status, count in self.responses.items()},
            "upstream_errors": dict(self.upstream_errors),
            "upstream_latency": {
                command: {
                    "buckets": [int(c) for c in hist[: len(UPSTREAM_BUCKETS) + 1]],
                    "sum": hist[-2],
                    "count": int(hist[-1]),
                }
                for command, hist in self.upstream_latency.items()
            },
            "revoked": dict(self.revoked),
            "connections": self.connections,
            "connections_refused": self.connections_refused,
            "connections_refused_per_ip": self.connections_refused_per_ip,
            "header_timeouts": self.header_timeouts,
            "pw1_limited": self.pw1_limited,
            "in_flight": self.in_flight,
            "held": self.held,
            "upstream_idle": self.upstream_idle,
            "gc_passes": self.gc_passes,
            "gc_pass_seconds": self.gc_pass_seconds,
            "gc_slow_passes": self.gc_slow_passes,
        }


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up worker snapshots (counters and gauges alike: each gauge is per process)."""
    total: dict[str, Any] = ProxyMetrics().snapshot()
    for snap in snapshots:
        for key in ("requests", "responses", "upstream_errors", "revoked"):
            for name, value in snap.get(key, {}).items():
                total[key][name] = total[key].get(name, 0) + value
        for command, hist in snap.get("upstream_latency", {}).items():
            into = total["upstream_latency"].setdefault(
                command, {"buckets": [0] * (len(UPSTREAM_BUCKETS) + 1), "sum": 0.0, "count": 0}
            )
            into["buckets"] = [a + b for a, b in zip(into["buckets"], hist["buckets"], strict=True)]
            into["sum"] += hist["sum"]
            into["count"] += hist["count"]
        for key in (
            "connections",
            "connections_refused",
            "connections_refused_per_ip",
            "header_timeouts",
            "pw1_limited",
            "in_flight",
            "held",
            "upstream_idle",
            "gc_passes",
            "gc_pass_seconds",
            "gc_slow_passes",
        ):
            total[key] += snap.get(key, 0)
    return total
