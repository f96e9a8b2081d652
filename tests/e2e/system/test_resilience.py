"""Bulk refresh and outages, with three nodes of one cluster:

- node-1 talks to the control plane directly: it is restarted while the control plane
  is down and must enforce its persisted policy, and its spooled access events must
  reach the dashboard once the control plane is back;
- node-2's WebSocket goes through a proxy that can cut it: a change made while it is
  disconnected must arrive by the delta it fetches after reconnecting;
- node-3's WebSocket goes through a proxy that can silently drop every byte, and its
  Rules Refresh Interval is 2 s: a change whose push it never sees must arrive by the
  interval refresh.
moto runs in a process of its own, so the control plane can crash and come back with
its data (as DynamoDB and SQS outlive a Lambda outage).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from seg_cli.demo import (
    checkin,
    dashboard_row,
    enroll,
    refused_reason,
    sync_inbox,
    wait_enforced,
)
from seg_local.stack import Node, Stack, StackOptions

from .conftest import allowed_device, dump_logs_on_failure, eventually, metrics, new_device
from .tcp_proxy import TcpProxy


@dataclass
class World:
    stack: Stack
    cut: TcpProxy  # node-2's WebSocket path
    mute: TcpProxy  # node-3's WebSocket path


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[World]:
    holder: dict[str, Stack] = {}

    def ws_target() -> tuple[str, int]:
        url = httpx.URL(holder["stack"].endpoints["ws_url"])
        return url.host, int(url.port or 80)

    cut, mute = TcpProxy(ws_target), TcpProxy(ws_target)
    cut.start()
    mute.start()
    stack = Stack(
        StackOptions(
            state_dir=tmp_path_factory.mktemp("seg"),
            nodes=3,
            external_moto=True,
            demo_ping_hold_cap_s=2.0,
            gateway_env={"SEG_GW_BACKOFF_INITIAL_S": "0.2", "SEG_GW_BACKOFF_MAX_S": "1"},
            node_gateway_env={
                "node-2": {"SEG_GW_WS_URL": f"ws://127.0.0.1:{cut.port}/local"},
                "node-3": {
                    "SEG_GW_WS_URL": f"ws://127.0.0.1:{mute.port}/local",
                    "SEG_GW_REFRESH_INTERVAL_S": "2",
                },
            },
        )
    )
    holder["stack"] = stack
    failed_before = request.session.testsfailed
    try:
        stack.start()
        yield World(stack, cut, mute)
    finally:
        dump_logs_on_failure(stack, request, failed_before)
        stack.stop()
        cut.stop()
        mute.stop()


def _fetches(node: Node, outcome: str) -> float:
    return metrics(node)[f'seg_gateway_policy_fetches_total{{outcome="{outcome}"}}']


def _connected(node: Node) -> bool:
    return metrics(node)['seg_gateway_push_connection_state{state="connected"}'] == 1.0


def _access(node: Node, user: str, device_id: str) -> str:
    r = httpx.get(
        node.admin_url + "/diagnostics/decision",
        params={"user": user, "device_id": device_id},
        timeout=5,
    )
    return str(r.json()["access"])


def test_change_while_disconnected_arrives_by_delta_after_reconnect(world: World) -> None:
    stack = world.stack
    node1, node2 = stack.nodes[0], stack.nodes[1]
    device = allowed_device(stack)
    deltas, snapshots = _fetches(node2, "delta"), _fetches(node2, "snapshot")

    world.cut.set_mode("refuse")
    eventually(lambda: not _connected(node2), what="node-2 notices the cut")
    checkin(stack, device, compromised=True)
    wait_enforced([node1], device.user, device.device_id, "block")
    assert _access(node2, device.user, device.device_id) == "allow"  # it cannot know yet

    world.cut.set_mode("pass")
    wait_enforced([node2], device.user, device.device_id, "block")
    assert _fetches(node2, "delta") > deltas
    assert _fetches(node2, "snapshot") == snapshots  # the delta, not a full reload


def test_missed_push_arrives_by_the_interval_refresh(world: World) -> None:
    stack = world.stack
    node1, node3 = stack.nodes[0], stack.nodes[2]
    device = allowed_device(stack)

    world.mute.set_mode("blackhole")  # the node keeps its socket and hears nothing
    # Counted once nothing more arrives: a message already past the mute when it closed
    # (a pong) is still read by the node.
    before = eventually(lambda: _quiet_metrics(node3), what="node-3 hears nothing more")
    checkin(stack, device, compromised=True)
    wait_enforced([node1], device.user, device.device_id, "block")
    wait_enforced([node3], device.user, device.device_id, "block", timeout=15)
    after = metrics(node3)
    world.mute.set_mode("pass")

    assert after["seg_gateway_push_messages_total"] == before["seg_gateway_push_messages_total"]
    assert after["seg_gateway_push_connects_total"] == before["seg_gateway_push_connects_total"]
    snapshot = 'seg_gateway_policy_fetches_total{outcome="snapshot"}'
    assert after[snapshot] > before[snapshot]


def _quiet_metrics(node: Node) -> dict[str, float] | None:
    """The node's metrics if no WebSocket message arrived over half a second, else None."""
    first = metrics(node)
    time.sleep(0.5)
    second = metrics(node)
    pushes = "seg_gateway_push_messages_total"
    return second if first[pushes] == second[pushes] else None


def test_restart_during_outage_enforces_persisted_policy_and_spools(world: World) -> None:
    stack = world.stack
    assert stack.tls is not None
    node1, ca = stack.nodes[0], stack.tls.ca_cert
    allowed = allowed_device(stack)
    blocked = new_device()
    enroll(stack, blocked)
    checkin(stack, blocked, compromised=True)
    wait_enforced([node1], blocked.user, blocked.device_id, "block")

    stack.stop_control_plane(kill=True)  # a crash: no goodbye to anyone
    node1.child.stop()
    stack.start_node(node1, wait_ready=False)
    eventually(
        lambda: _access(node1, allowed.user, allowed.device_id) == "allow",
        timeout=60,
        what="the restarted node enforces its persisted policy",
    )
    assert _access(node1, blocked.user, blocked.device_id) == "block"
    assert not _connected(node1)
    assert sync_inbox(node1, ca, allowed)  # mail keeps flowing for compliant devices
    assert refused_reason(node1, ca, blocked) == "EAS status 129"
    eventually(
        lambda: metrics(node1)["seg_gateway_spool_events"] > 0,
        timeout=60,
        what="events spooled to disk",
    )
    assert dashboard_row_safe(stack, allowed) is None

    stack.start_control_plane()  # same ports, same data
    eventually(lambda: _connected(node1), timeout=60, what="node-1 reconnects")
    # The device synced only through node-1 and only during the outage: its row can
    # only come from the spool.
    row = eventually(
        lambda: dashboard_row(stack, allowed),
        timeout=60,
        what="the spooled sync reaches the dashboard",
    )
    assert row["last_node"] == node1.node_id
    assert row["access_state"] == "allow"


def dashboard_row_safe(stack: Stack, device: object) -> object:
    """The dashboard row, or None while the control plane is down."""
    try:
        return dashboard_row(stack, device)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None
