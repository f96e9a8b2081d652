"""The diagnostics answer and the Prometheus rendering, without a network."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from onprem_gateway.agent.diagnostics import DiagnosticsError, explain_device
from onprem_gateway.agent.event_buffer import EventBuffer
from onprem_gateway.agent.lifecycle import State
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_sync import LinkStatus
from onprem_gateway.agent.policy_trust import PolicyRefused
from onprem_gateway.agent.reporter import Reporter
from onprem_gateway.agent.spool import Spool
from onprem_gateway.agent.telemetry import render
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy.metrics import ProxyMetrics
from seg_contract import Access, UserCredential
from seg_contract.crypto import hash_device_password
from tests.unit.gateway_agent.helpers import entry, push, signed_push, snapshot, trust


def index_with_credential() -> PolicyIndex:
    snap = snapshot().model_copy(
        update={
            "credentials": (
                UserCredential(
                    user="alice",
                    pw1_hashes=(hash_device_password("device-secret", n=2**10),),
                    sealed_pw2="c2VhbGVkLXNlY3JldA==",
                    version=2,
                    updated_at=datetime.now(UTC),
                ),
            )
        }
    )
    return PolicyIndex.from_snapshot(snap, time.time())


def test_explains_an_allowed_device_without_any_secret() -> None:
    answer = explain_device({"user": "CORP\\Alice", "device_id": "DEV1"}, index_with_credential())
    assert answer["access"] == "allow" and answer["rule"] == "entry"
    assert answer["question"]["user"] == "alice"  # type: ignore[index]
    assert answer["credential_substitution"] == "enabled"
    text = repr(answer)
    assert "scrypt" not in text and "c2VhbGVk" not in text and "device-secret" not in text


def test_explains_fail_closed_without_a_policy() -> None:
    answer = explain_device({"user": "alice", "device_id": "dev1"}, PolicyIndex.empty())
    assert answer["access"] == "block" and answer["rule"] == "no_policy"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"user": "alice"}, "required"),
        ({"device_id": "x"}, "required"),
        ({"user": "a", "device_id": "b", "extra": "1"}, "unknown parameter"),
        ({"user": "a", "device_id": "b", "command": "Explode"}, "unknown command"),
        ({"user": "a", "device_id": "x" * 300}, "DeviceId"),
        ({"user": "a", "device_id": "b", "protocol_version": "99.x"}, "protocol version"),
    ],
)
def test_bad_questions_get_a_reason(query: dict[str, str], message: str) -> None:
    with pytest.raises(DiagnosticsError, match=message):
        explain_device(query, index_with_credential())


class FakeNode:
    def __init__(self, tmp_path: Path) -> None:
        self.store = PolicyStore()
        self.store.apply_snapshot(snapshot(), time.time())
        self.trust = trust(time.time)
        self.link_status: LinkStatus | None = LinkStatus(state=State.CONNECTED, snapshots=1)
        self.reporter = Reporter(
            EventBuffer(),
            Spool(tmp_path, max_bytes=1 << 20),
            None,
            node_id="n1",
            flush_interval_s=1,
            retry_delays=lambda: iter([1.0]),
        )
        self.upstream_ok: bool | None = True
        self.metrics = ProxyMetrics()

    def proxy_metrics(self) -> dict[str, Any]:
        return self.metrics.snapshot()

    def workers_status(self) -> list[dict[str, Any]]:
        return [{"running": True, "restarts": 0}, {"running": False, "restarts": 2}]


def test_metrics_render_every_family(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.metrics.count_request("Ping", "allow", True)
    node.metrics.count_request("Sync", "block", False)
    node.metrics.observe_upstream("Ping", 0.003)
    node.metrics.held = 4
    text = render(node).decode()
    for line in (
        'seg_gateway_requests_total{command="Ping",decision="allow",enforced="true"} 1.0',
        'seg_gateway_requests_total{command="Sync",decision="block",enforced="false"} 1.0',
        'seg_gateway_upstream_latency_seconds_bucket{command="Ping",le="0.005"} 1.0',
        'seg_gateway_upstream_latency_seconds_bucket{command="Ping",le="+Inf"} 1.0',
        "seg_gateway_held 4.0",
        "seg_gateway_policy_version 2.0",
        "seg_gateway_policy_devices 2.0",
        'seg_gateway_policy_freshness{level="fresh"} 1.0',
        'seg_gateway_policy_freshness{level="expired"} 0.0',
        'seg_gateway_push_connection_state{state="connected"} 1.0',
        'seg_gateway_policy_fetches_total{outcome="snapshot"} 1.0',
        "seg_gateway_workers_running 1.0",
        "seg_gateway_worker_restarts_total 2.0",
        "seg_gateway_spool_evicted_events_total 0.0",
        "seg_gateway_fail_closed 0.0",
    ):
        assert line in text, line


def test_refused_policy_input_is_counted_by_reason(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    text = render(node).decode()
    for reason in ("bad_signature", "unknown_key", "expired", "issued_in_future"):
        assert f'seg_gateway_policy_rejected_total{{reason="{reason}"}} 0.0' in text
    raw = signed_push(push(entry("alice", "dev1", Access.BLOCK, 3)), time.time())
    tampered = raw.replace('\\"block\\"', '\\"allow\\"', 1)
    assert tampered != raw
    with pytest.raises(PolicyRefused), node.trust.refusals("push"):
        node.trust.push(tampered, node.store.current())
    text = render(node).decode()
    assert 'seg_gateway_policy_rejected_total{reason="payload_mismatch"} 1.0' in text


def test_air_gapped_node_reports_no_link_state(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    node.link_status = None
    text = render(node).decode()
    assert 'seg_gateway_push_connection_state{state="connected"} 0.0' in text
    assert "seg_gateway_policy_fetches_total" not in text
