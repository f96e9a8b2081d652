"""What the node benches count as a good answer, and the arithmetic of their figures.

Pure (no I/O), so the unit tier can prove the checker right: a bench of a proxy that
counts answers without looking at them would report a gateway that blocks everything as
the fastest one, because a blocked EAS request is answered too (for protocol 14.0+ with
HTTP 200 and a WBXML body carrying status 129, ``onprem_gateway.core.block_responses``).

Every upstream the benches put behind a proxy answers every request with exactly
``UPSTREAM_BODY``; an answer is good only when it is HTTP 200 with that body. For the
closed-loop load (wrk, which does not look at bodies) the same rule is applied through
counters: the node's decisions from ``/metrics`` (every decision other than an enforced
allow is an error) and the upstream's own request count (a completed request that the
upstream never saw was not proxied).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# The body every bench upstream answers with (a Sync answer's size; the marker is what a
# gateway's own answers can never contain).
UPSTREAM_BODY = b"seg-bench-upstream-answer:" + b"0123456789abcdef" * 4
WBXML_HEADER = b"\x03\x01j\x00"  # WBXML 1.3, public id 1, UTF-8, no string table


def answer_error(status: int, body: bytes) -> str | None:
    """None for the upstream's answer, else why it is an error (a short kind)."""
    if status == 200 and body == UPSTREAM_BODY:
        return None
    if status == 200 and body.startswith(WBXML_HEADER):
        return "blocked (HTTP 200 + WBXML status)"
    if status == 200:
        return "HTTP 200 not from the upstream"
    return f"HTTP {status}"


# --- counters ------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{label=value,...}": value} (labels sorted)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def _decisions(metrics: Mapping[str, float]) -> dict[str, float]:
    """seg_gateway_requests_total by "decision/enforced"."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.startswith("seg_gateway_requests_total{"):
            labels = dict(
                part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(",") if part
            )
            name = f"{labels.get('decision', '')}/{labels.get('enforced', '')}"
            out[name] = out.get(name, 0.0) + value
    return out


@dataclass(frozen=True)
class CounterCheck:
    """What the counters say about one measured run."""

    allowed: int  # enforced allow decisions the node made during the run
    errors: int  # answers that cannot have been the upstream's
    detail: str  # why, for the table's footnote ("" when none)


def check_counters(
    completed: int,
    *,
    upstream_before: int,
    upstream_after: int,
    node_before: Mapping[str, float] | None = None,
    node_after: Mapping[str, float] | None = None,
    non_2xx: int = 0,
    socket_errors: int = 0,
) -> CounterCheck:
    """Errors of a closed-loop run of ``completed`` answered requests.

    - every node decision other than an enforced allow (block, quarantine, test-mode
      pass, fail-closed...) is an error, whatever HTTP status it was answered with;
    - answers the upstream never produced: ``completed`` minus the requests the upstream
      served (it may have served a few more than were counted: those still in flight
      when the load generator stopped);
    - non-2xx answers and socket errors the load generator saw.
    The largest of the first two (they may count the same answers) plus the last.
    """
    details = []
    decided_other = 0
    allowed = 0
    if node_before is not None and node_after is not None:
        before, after = _decisions(node_before), _decisions(node_after)
        for name in sorted(set(before) | set(after)):
            delta = int(after.get(name, 0) - before.get(name, 0))
            if name == "allow/true":
                allowed = delta
            elif delta:
                decided_other += delta
                details.append(f"{delta} decided {name}")
    shortfall = max(0, completed - (upstream_after - upstream_before))
    if shortfall:
        details.append(f"{shortfall} answers the upstream never produced")
    if non_2xx:
        details.append(f"{non_2xx} non-2xx")
    if socket_errors:
        details.append(f"{socket_errors} socket errors")
    errors = max(decided_other, shortfall) + non_2xx + socket_errors
    return CounterCheck(allowed, errors, "; ".join(details))


# --- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    def text(self, fmt: str = "{:.0f}") -> str:
        if self.n == 0 or self.median != self.median:  # nan
            return "-"
        if self.n == 1 or self.low == self.high:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"


def spread(values: Iterable[float]) -> Spread:
    """Median with min-max over the rounds (nan values are left out)."""
    vals = [v for v in values if v == v]
    if not vals:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    return Spread(statistics.median(vals), min(vals), max(vals), len(vals))


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; nan with fewer than 3."""
    if len(points) < 3:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def round_order(configs: Sequence[str], round_index: int) -> list[str]:
    """Configurations in the given order in even rounds and reversed in odd ones, so no
    configuration always runs first (warm caches) or last (a hotter machine)."""
    return list(configs) if round_index % 2 == 0 else list(reversed(configs))
