"""Prometheus exposition of the node: one collector that reads the node's state at scrape
time (no metric objects updated on the request path, nothing to keep in sync).

Data-path counters come from ``ProxyMetrics.snapshot()`` of every EAS server (the worker
processes report theirs to the agent; ``proxy.metrics.merge`` adds them up). Names are
``seg_gateway_*``; see docs/gateway.md for the list.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from onprem_gateway.agent.lifecycle import State
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_sync import LinkStatus
from onprem_gateway.agent.policy_trust import PolicyTrust
from onprem_gateway.agent.reporter import Reporter
from onprem_gateway.agent.spool import SPOOL_STATES
from onprem_gateway.core.freshness import Enforcement, Level, freshness
from onprem_gateway.proxy.metrics import UPSTREAM_BUCKETS
from seg_contract.signing import RejectReason

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeState(Protocol):
    store: PolicyStore
    trust: PolicyTrust
    link_status: LinkStatus | None
    reporter: Reporter
    upstream_ok: bool | None

    def proxy_metrics(self) -> dict[str, Any]: ...

    def workers_status(self) -> list[dict[str, Any]]: ...


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class NodeCollector(Collector):
    def __init__(self, node: NodeState) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        yield from self._policy()
        yield from self._link()
        yield from self._events()
        yield from self._data_path(self._node.proxy_metrics())
        workers = self._node.workers_status()
        yield _gauge(
            "seg_gateway_workers_running",
            "EAS worker processes running (0 in in-process mode)",
            sum(1 for w in workers if w.get("running")),
        )
        yield CounterMetricFamily(
            "seg_gateway_worker_restarts",
            "EAS worker processes restarted after an unexpected exit",
            value=sum(int(w.get("restarts", 0)) for w in workers),
        )
        up = self._node.upstream_ok
        yield _gauge(
            "seg_gateway_upstream_up",
            "1 when the last upstream reachability check succeeded",
            1.0 if up else 0.0,
        )

    def _policy(self) -> Iterator[Metric]:
        index = self._node.store.current()
        fresh = freshness(index, time.time())
        yield _gauge("seg_gateway_policy_version", "applied policy version", index.version)
        yield _gauge(
            "seg_gateway_policy_age_seconds",
            "seconds since the control plane last vouched for the policy",
            fresh.age_s,
        )
        yield _gauge("seg_gateway_policy_devices", "device entries held", index.device_count())
        family = GaugeMetricFamily(
            "seg_gateway_policy_freshness",
            "policy freshness level (1 for the current one)",
            labels=["level"],
        )
        for level in Level:
            family.add_metric([level.value], 1.0 if fresh.level is level else 0.0)
        yield family
        yield _gauge(
            "seg_gateway_fail_closed",
            "1 while every request is blocked for lack of a usable policy",
            1.0 if fresh.enforcement is Enforcement.BLOCK_ALL else 0.0,
        )
        yield _gauge(
            "seg_gateway_policy_exact",
            "1 while the node holds exactly its applied version (its digest is reported)",
            1.0 if index.exact else 0.0,
        )
        rejected = CounterMetricFamily(
            "seg_gateway_policy_rejected",
            "signed policy input refused (not applied), by reason",
            labels=["reason"],
        )
        by_reason = self._node.trust.rejections.by_reason
        for reason in RejectReason:
            rejected.add_metric([reason.value], by_reason.get(reason.value, 0))
        yield rejected

    def _link(self) -> Iterator[Metric]:
        status = self._node.link_status
        family = GaugeMetricFamily(
            "seg_gateway_push_connection_state",
            "control-plane WebSocket state (1 for the current one; all 0 when air-gapped)",
            labels=["state"],
        )
        for state in State:
            family.add_metric(
                [state.value], 1.0 if status is not None and status.state is state else 0.0
            )
        yield family
        if status is None:
            return
        fetches = CounterMetricFamily(
            "seg_gateway_policy_fetches", "policy fetches by outcome", labels=["outcome"]
        )
        fetches.add_metric(["snapshot"], status.snapshots)
        fetches.add_metric(["not_modified"], status.not_modified)
        fetches.add_metric(["delta"], status.deltas)
        fetches.add_metric(["failed"], status.fetch_failures)
        fetches.add_metric(["refused"], status.fetches_refused)
        yield fetches
        yield CounterMetricFamily(
            "seg_gateway_push_connects", "WebSocket connections opened", value=status.connects
        )
        yield CounterMetricFamily(
            "seg_gateway_push_messages", "WebSocket messages received", value=status.pushes
        )
        yield _gauge(
            "seg_gateway_credential_rejected",
            "1 when the control plane refused or revoked the cluster credential",
            1.0 if status.fatal else 0.0,
        )
        unresponsive = status.unresponsive_since is not None
        yield _gauge(
            "seg_gateway_control_plane_up",
            "1 while the WebSocket is connected and keepalives are answered in time",
            1.0 if status.state is State.CONNECTED and not unresponsive else 0.0,
        )
        yield _gauge(
            "seg_gateway_control_plane_unresponsive",
            "1 from a missed pong deadline (or unanswered handshake) until the next pong",
            1.0 if unresponsive else 0.0,
        )
        yield CounterMetricFamily(
            "seg_gateway_pong_deadline_misses",
            "keepalives not answered within the pong deadline (the connection was replaced)",
            value=status.pong_deadline_misses,
        )
        yield CounterMetricFamily(
            "seg_gateway_policy_digest_mismatch",
            "pongs that found this node's policy digest diverged from the control plane's",
            value=status.digest_mismatches,
        )
        yield _gauge(
            "seg_gateway_policy_last_verified_timestamp_seconds",
            "when the control plane last found the node's digest in sync (epoch; 0: never)",
            status.last_verified_at or 0.0,
        )
        replaced = CounterMetricFamily(
            "seg_gateway_policy_replacements",
            "policies replaced by a fresh snapshot, by reason",
            labels=["reason"],
        )
        for reason in ("diverged", "uncommitted", "resync_full"):
            replaced.add_metric([reason], status.replacements.get(reason, 0))
        yield replaced

    def _events(self) -> Iterator[Metric]:
        reporter = self._node.reporter
        spool = reporter.spool
        yield _gauge(
            "seg_gateway_spool_events", "access events waiting on disk", spool.depth_events
        )
        yield _gauge("seg_gateway_spool_bytes", "bytes of the on-disk spool", spool.depth_bytes)
        oldest = spool.oldest_unsent_at
        yield _gauge(
            "seg_gateway_spool_oldest_unsent_age_seconds",
            "age of the oldest access event on disk not yet accepted by the control plane",
            max(0.0, time.time() - oldest) if oldest is not None else 0.0,
        )
        yield CounterMetricFamily(
            "seg_gateway_events_spooled",
            "access events committed to the on-disk spool (fsynced)",
            value=reporter.spooled_events,
        )
        yield CounterMetricFamily(
            "seg_gateway_spool_write_failures",
            "spool commits that failed (the events stayed in memory and were retried)",
            value=reporter.spool_failures,
        )
        yield CounterMetricFamily(
            "seg_gateway_spool_evicted_events",
            "spooled access events evicted (oldest first) because the spool was full",
            value=spool.evicted_events,
        )
        yield _gauge("seg_gateway_spool_max_bytes", "bound of the on-disk spool", spool.max_bytes)
        state = spool.state(time.time())
        family = GaugeMetricFamily(
            "seg_gateway_spool_state",
            "spool state (1 for the current one): near_full from 90%, evicting from an "
            "eviction until 5 minutes without one",
            labels=["state"],
        )
        for name in SPOOL_STATES:
            family.add_metric([name], 1.0 if state == name else 0.0)
        yield family
        yield _gauge(
            "seg_gateway_events_folding",
            "1 while access events are folded per device, outcome and window (undeliverable)",
            1.0 if reporter.folding else 0.0,
        )
        yield CounterMetricFamily(
            "seg_gateway_events_folded",
            "access events folded into aggregated records while they could not be delivered",
            value=reporter.folded_events,
        )
        yield _gauge(
            "seg_gateway_fold_open_records",
            "folded records of windows still open (in memory and the fold checkpoint)",
            reporter.open_records,
        )
        yield _gauge(
            "seg_gateway_fold_open_events",
            "access events those open folded records stand for",
            reporter.open_events,
        )
        yield _gauge(
            "seg_gateway_events_buffered", "access events waiting in memory", len(reporter.buffer)
        )
        yield CounterMetricFamily(
            "seg_gateway_events_sent", "access events delivered", value=reporter.sent_events
        )
        yield CounterMetricFamily(
            "seg_gateway_events_rejected",
            "access events the control plane refused for good",
            value=reporter.rejected_events,
        )
        yield _gauge(
            "seg_gateway_events_folded_refused",
            "1 while the control plane refuses folded access events (upgrade it)",
            int(reporter.folded_refused),
        )
        yield CounterMetricFamily(
            "seg_gateway_events_dropped",
            "access events dropped from a full memory buffer",
            value=reporter.buffer.dropped,
        )

    def _data_path(self, snap: dict[str, Any]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "seg_gateway_requests",
            "EAS requests by command and decision (enforced=false: test mode let it through)",
            labels=["command", "decision", "enforced"],
        )
        for key, count in sorted(snap.get("requests", {}).items()):
            command, decision, enforced = [*key.split("|"), "", "", ""][:3]
            requests.add_metric([command, decision, enforced], count)
        yield requests
        responses = CounterMetricFamily(
            "seg_gateway_responses", "responses sent to devices by status", labels=["status"]
        )
        for status, count in sorted(snap.get("responses", {}).items()):
            responses.add_metric([status], count)
        yield responses
        errors = CounterMetricFamily(
            "seg_gateway_upstream_errors", "upstream failures by kind", labels=["kind"]
        )
        for kind, count in sorted(snap.get("upstream_errors", {}).items()):
            errors.add_metric([kind], count)
        yield errors
        revoked = CounterMetricFamily(
            "seg_gateway_revoked_requests",
            "in-flight requests a policy change ended (answered: blocked answer; closed: cut)",
            labels=["outcome"],
        )
        for outcome, count in sorted(snap.get("revoked", {}).items()):
            revoked.add_metric([outcome], count)
        yield revoked
        for key, doc in (
            ("connections_refused_per_ip", "connections refused over max_connections_per_ip"),
            ("header_timeouts", "connections cut at the request-head deadline (408)"),
            ("pw1_limited", "device-password attempts refused without hashing (rate limit)"),
            ("gc_passes", "the workers' cyclic garbage-collector passes"),
            ("gc_pass_seconds", "time the workers' event loops spent in collector passes"),
            ("gc_slow_passes", "collector passes over 5 ms (a stall for every request)"),
        ):
            yield CounterMetricFamily(f"seg_gateway_{key}", doc, value=snap.get(key, 0))
        latency = HistogramMetricFamily(
            "seg_gateway_upstream_latency_seconds",
            "time from request head sent upstream to response head received",
            labels=["command"],
        )
        bounds = [*(repr(b) for b in UPSTREAM_BUCKETS), "+Inf"]
        for command, hist in sorted(snap.get("upstream_latency", {}).items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, hist["buckets"], strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([command], cumulative, hist["sum"])
        yield latency
        for key, doc in (
            ("connections", "open client connections"),
            ("in_flight", "requests being answered"),
            ("held", "held long-poll requests (Ping, Sync with Wait)"),
            ("upstream_idle", "idle pooled upstream connections"),
        ):
            yield _gauge(f"seg_gateway_{key}", doc, snap.get(key, 0))


def render(node: NodeState) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return generate_latest(registry)
