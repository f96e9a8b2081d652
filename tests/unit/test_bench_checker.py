"""The node benches count every answer that is not the upstream's as an error (bench/
_verify.py). A blocked EAS request is answered with HTTP 200 too, so a bench that only
looked at status codes would report a gateway that blocks everything as a fast one."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from bench._policy import eas_path, snapshot
from bench._verify import (
    UPSTREAM_BODY,
    answer_error,
    check_counters,
    parse_metrics,
    round_order,
    spread,
)
from onprem_gateway.agent.telemetry import NodeCollector
from onprem_gateway.core.block_responses import blocked_response
from onprem_gateway.core.decision import decide
from onprem_gateway.core.eas_request import parse
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy.metrics import ProxyMetrics
from seg_contract import Access

HEADERS = {"ms-asprotocolversion": "14.1", "user-agent": "Apple-iPhone15C2/2201.100"}


def _gateway_answer(device: int, *, policy: PolicyIndex | None = None) -> tuple[int, bytes]:
    """What the gateway answers device ``device`` of a 2-device policy whose device 0 is
    blocked: the product's own decision and blocked answer."""
    now = time.time()
    index = policy or PolicyIndex.from_snapshot(snapshot(2, blocked=1), confirmed_at=now)
    facts = parse("POST", eas_path("Sync", device), HEADERS)
    decision = decide(facts, index, now)
    if decision.access is Access.ALLOW:
        return 200, UPSTREAM_BODY  # proxied: the upstream's answer
    answer = blocked_response(facts, decision)
    return answer.status, answer.body


def test_a_blocked_answer_is_an_error_although_it_is_http_200() -> None:
    status, body = _gateway_answer(0)
    assert status == 200
    assert answer_error(status, body) == "blocked (HTTP 200 + WBXML status)"


def test_the_upstreams_answer_is_the_only_success() -> None:
    assert answer_error(*_gateway_answer(1)) is None
    assert answer_error(200, b"ok") == "HTTP 200 not from the upstream"
    assert answer_error(502, UPSTREAM_BODY) == "HTTP 502"


def test_a_node_without_a_policy_fails_closed_and_that_is_an_error() -> None:
    status, body = _gateway_answer(1, policy=PolicyIndex.empty())
    assert status == 503
    assert answer_error(status, body) == "HTTP 503"


class _DataPath(Collector):
    """The node's data-path metric families, exactly as /metrics renders them."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from NodeCollector(None)._data_path(self._metrics.snapshot())  # type: ignore[arg-type]


def _metrics_text(metrics: ProxyMetrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DataPath(metrics))
    return generate_latest(registry).decode()


def test_counters_count_every_blocked_decision_as_an_error() -> None:
    metrics = ProxyMetrics()
    before = parse_metrics(_metrics_text(metrics))
    for _ in range(97):
        metrics.count_request("Sync", "allow", True)
    for _ in range(3):
        metrics.count_request("Sync", "block", True)
    after = parse_metrics(_metrics_text(metrics))
    # wrk saw 100 answers, all HTTP 200; the upstream served the 97 allowed ones.
    check = check_counters(
        100, upstream_before=10, upstream_after=107, node_before=before, node_after=after
    )
    assert check.allowed == 97
    assert check.errors == 3
    assert "3 decided block/true" in check.detail


def test_counters_catch_answers_the_upstream_never_produced() -> None:
    # Without node counters (nginx): 1000 answers, the upstream served 990 of them.
    check = check_counters(1000, upstream_before=0, upstream_after=990)
    assert check.errors == 10
    # In-flight requests at the end may make the upstream count higher: not an error.
    assert check_counters(1000, upstream_before=0, upstream_after=1003).errors == 0


def test_a_test_mode_pass_is_not_a_proxied_allow() -> None:
    metrics = ProxyMetrics()
    before = parse_metrics(_metrics_text(metrics))
    metrics.count_request("Sync", "block", False)  # test mode: let through, would block
    after = parse_metrics(_metrics_text(metrics))
    check = check_counters(
        1, upstream_before=0, upstream_after=1, node_before=before, node_after=after
    )
    assert check.errors == 1


def test_rounds_alternate_and_spreads_ignore_missing_values() -> None:
    assert round_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert round_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert spread([3.0, 1.0, 2.0, float("nan")]).text() == "2 (1-3)"
    assert spread([]).text() == "-"
