"""The seed's three flows across a two-node cluster, with a real EAS client.

1. single-device updates (enrollment, check-in, console override, unenrollment) reach
   BOTH nodes by push, with no policy fetch in between, and the next sync on either node
   is decided accordingly;
2. bulk refresh: a node's first snapshot holds what was decided before it started (here:
   every decision below, for both nodes; reconnect deltas and the interval refresh are
   in test_resilience.py);
3. the dashboard: every sync becomes an access event that reaches the console API.
Last, a revoked cluster credential disconnects the nodes and is refused afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from seg_cli.demo import (
    DemoDevice,
    checkin,
    dashboard_row,
    enroll,
    post_mdm_event,
    refused_reason,
    run_demo,
    sync_inbox,
    wait_enforced,
)
from seg_local.stack import Stack

from .conftest import eventually, metrics, new_device, override

FETCHES = tuple(
    f'seg_gateway_policy_fetches_total{{outcome="{o}"}}'
    for o in ("snapshot", "not_modified", "delta")
)


def _fetches(stack: Stack) -> list[float]:
    return [metrics(n)[name] for n in stack.nodes for name in FETCHES]


def _pushes(stack: Stack) -> list[float]:
    return [metrics(n)["seg_gateway_push_messages_total"] for n in stack.nodes]


def test_single_device_updates_reach_both_nodes_by_push(stack: Stack) -> None:
    device = new_device()
    fetches, pushes = _fetches(stack), _pushes(stack)

    enroll(stack, device)
    checkin(stack, device, compromised=False)
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")

    checkin(stack, device, compromised=True)
    wait_enforced(stack.nodes, device.user, device.device_id, "block")

    override(stack, device.user, device.device_id, "allow")  # the admin knows better
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")
    override(stack, device.user, device.device_id, "clear")
    wait_enforced(stack.nodes, device.user, device.device_id, "block")

    post_mdm_event(stack, {"type": "unenrollment", "mdm_device_id": device.mdm_device_id})
    eventually(
        lambda: all(n_entry(stack, n, device) == "unenrolled" for n in range(len(stack.nodes))),
        what="the unenrollment reaches both nodes",
    )
    # Every change came by push: at least the four that changed the entry reached each
    # node, and no node needed a snapshot. (A delta may legitimately be fetched when a
    # keepalive's pong states the new version a moment before its push is applied.)
    assert all(after >= before + 4 for after, before in zip(_pushes(stack), pushes, strict=True))
    snapshots = [i for i, name in enumerate(FETCHES * len(stack.nodes)) if "snapshot" in name]
    assert [_fetches(stack)[i] for i in snapshots] == [fetches[i] for i in snapshots]


def n_entry(stack: Stack, index: int, device: DemoDevice) -> str:
    """The source of the entry node ``index`` holds for the device."""
    node = stack.nodes[index]
    r = httpx.get(
        node.admin_url + "/diagnostics/decision",
        params={"user": device.user, "device_id": device.device_id},
        timeout=5,
    )
    entry = r.json().get("entry") or {}
    return str(entry.get("source", ""))


def test_scheduled_checkin_blocks_a_device_that_stopped_checking_in(stack: Stack) -> None:
    device = new_device()
    # Enrolled and last checked in 8 s short of the policy's maximum check-in age (a day
    # by default): compliant now, stale in 8 s, when only the schedule re-evaluates it.
    long_ago = (datetime.now(UTC) - timedelta(seconds=86_400 - 8)).isoformat()
    post_mdm_event(
        stack,
        {
            "type": "enrollment",
            "occurred_at": long_ago,
            "mdm_device_id": device.mdm_device_id,
            "user": device.user,
            "eas_device_ids": [device.device_id],
            "managed": True,
        },
    )
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")
    wait_enforced(stack.nodes, device.user, device.device_id, "block", timeout=30)
    # The reader pushes the block first and records the device's compliance state after
    # (enforcement does not wait on the console's record), so the console may lag the
    # nodes by the one write.
    path = f"/console/v1/email-devices/{device.user}/{device.device_id.lower()}"

    def console_state() -> str:
        with stack.console() as http:
            state = str(http.get(path).json()["compliance_state"])
        return state if state != "compliant" else ""

    assert eventually(console_state, timeout=10, what="the console shows the stale check-in")


def test_real_eas_client_syncs_through_either_node_until_blocked(stack: Stack) -> None:
    assert stack.tls is not None
    ca = stack.tls.ca_cert
    device = new_device()
    enroll(stack, device)
    checkin(stack, device, compromised=False)
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")
    for node in stack.nodes:
        subjects = sync_inbox(node, ca, device)
        assert "Welcome to the Secure Email Gateway demo" in subjects

    override(stack, device.user, device.device_id, "block")
    wait_enforced(stack.nodes, device.user, device.device_id, "block")
    for node in stack.nodes:
        assert refused_reason(node, ca, device) == "EAS status 129"  # 16.1: status, not 403

    override(stack, device.user, device.device_id, "clear")
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")
    assert sync_inbox(stack.nodes[1], ca, device)


def test_unknown_device_is_blocked_and_seen_on_the_dashboard(stack: Stack) -> None:
    assert stack.tls is not None
    device = new_device()  # never enrolled: the cluster's unknown-device action (block)
    assert refused_reason(stack.nodes[0], stack.tls.ca_cert, device) is not None
    row = eventually(
        lambda: dashboard_row(stack, device),
        what="the unknown device's access event reaches the dashboard",
    )
    assert row["access_state"] == "block"
    assert row["last_node"] == stack.nodes[0].node_id


def test_syncs_reach_the_dashboard_with_their_node(stack: Stack) -> None:
    assert stack.tls is not None
    ca = stack.tls.ca_cert
    device = new_device()
    enroll(stack, device)
    checkin(stack, device, compromised=False)
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")
    sync_inbox(stack.nodes[1], ca, device)
    row = eventually(lambda: dashboard_row(stack, device), what="the sync reaches the dashboard")
    assert row["last_command"] in {"Provision", "FolderSync", "Sync"}
    assert row["access_state"] == "allow"
    assert row["last_node"] == stack.nodes[1].node_id
    assert row["user"] == device.user
    with stack.console() as http:
        summary = http.get("/console/v1/email-devices/summary").json()
    assert summary["counts"]["allow"] >= 1


def test_the_demo_story_runs_end_to_end(stack: Stack) -> None:
    """What `seg up` / `seg demo` show (seg_cli.demo.run_demo) on this cluster."""
    lines: list[str] = []
    times = run_demo(stack, say=lines.append)
    assert set(times) == {n.node_id for n in stack.nodes}
    assert sum("refused (EAS status 129)" in line for line in lines) == len(stack.nodes)
    assert "5. The dashboard shows bob/bobpixel8: block" in "\n".join(lines)


async def test_revoked_credential_is_disconnected_and_refused(stack: Stack) -> None:
    with stack.console() as http:
        r = http.post(f"/console/v1/clusters/{stack.cluster_id}/credentials/revoke")
    assert r.status_code == 200, r.text

    def revoked(node_index: int) -> bool:
        node = stack.nodes[node_index]
        ready = httpx.get(node.admin_url + "/readyz", timeout=5)
        return ready.status_code == 503 and "revoked" in ready.text

    eventually(lambda: all(revoked(i) for i in range(len(stack.nodes))), what="nodes revoked")
    eventually(
        lambda: all(
            metrics(n).get('seg_gateway_push_connection_state{state="connected"}') == 0.0
            for n in stack.nodes
        ),
        what="nodes disconnected",
    )
    headers = {"Authorization": f"Bearer {stack.credential}", "X-SEG-Node-Id": "intruder"}
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            stack.endpoints["ws_url"], additional_headers=headers, ssl=stack.verify
        ):
            pass
    assert info.value.response.status_code in {401, 403}
    policy = httpx.get(
        stack.endpoints["api_url"] + "/gateway/v1/policy", headers=headers, verify=stack.verify
    )
    assert policy.status_code in {401, 403}
