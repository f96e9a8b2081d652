"""The node against a control-plane double over real HTTP and a real WebSocket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from onprem_gateway.agent.lifecycle import State
from seg_contract import Access, PushResync
from tests.integration.gateway_agent.conftest import (
    ConfigFactory,
    admin_get,
    eas_post,
    running,
)
from tests.integration.gateway_agent.control_plane_double import (
    CLUSTER,
    CREDENTIAL,
    ControlPlaneDouble,
    entry,
    eventually,
)

ALICE = "Cmd=Sync&User=alice&DeviceId=DEV1&DeviceType=iPhone"


def connected(node) -> bool:  # type: ignore[no-untyped-def]
    return node.link_status is not None and node.link_status.state is State.CONNECTED


def settled(node) -> bool:  # type: ignore[no-untyped-def]
    """Connected, and both start-up fetches (the refresh loop's snapshot and the one
    after connecting) are done: from here on only the test's actions change anything."""
    status = node.link_status
    fetches = status.snapshots + status.not_modified + status.deltas
    # A delta is counted once applied, while its task may still run and take one more
    # turn for a request made meanwhile (``request_delta`` coalesces).
    fetching = any(t.get_name() == "policy-delta" for t in asyncio.all_tasks())
    return connected(node) and fetches >= 2 and node.store.current().version == 2 and not fetching


async def test_start_fetches_the_snapshot_connects_and_is_ready(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: node.store.current().version == 2, what="snapshot")
        await eventually(lambda: connected(node), what="websocket")
        headers = double.ws_headers[0]
        assert headers["Authorization"] == f"Bearer {CREDENTIAL}"
        assert headers["X-SEG-Node-Id"] == "node-1"
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["policy"]["version"] == 2 and body["policy"]["cluster_id"] == CLUSTER
        assert body["control_plane"]["state"] == "connected"
        # The device the policy allows goes upstream; the blocked one gets 403 (EAS 12.1).
        assert (await eas_post(node.listen_port, ALICE)).status_code == 200
        bob = "Cmd=Sync&User=bob&DeviceId=dev2&DeviceType=iPhone"
        assert (await eas_post(node.listen_port, bob)).status_code == 403


async def test_a_push_changes_the_next_decision_without_a_poll(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: settled(node), what="settled")
        assert (await eas_post(node.listen_port, ALICE)).status_code == 200
        policy_gets = double.requests.count("GET /gateway/v1/policy")
        await double.push_entry(double.set_entry("alice", "dev1", Access.BLOCK))
        await eventually(lambda: node.store.current().version == 3, what="push applied")
        assert (await eas_post(node.listen_port, ALICE)).status_code == 403
        diag = (await admin_get(node, "/diagnostics/decision?user=alice&device_id=dev1")).json()
        assert diag["access"] == "block" and diag["rule"] == "entry"
        # No fetch was needed: the push alone did it.
        assert double.requests.count("GET /gateway/v1/policy") == policy_gets
        # The only delta fetches are the ones after connecting (since 2), none for the push.
        assert set(double.delta_calls) <= {2}


async def test_a_push_that_reveals_a_gap_fetches_a_delta(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: settled(node), what="settled")
        calls = len(double.delta_calls)
        double.set_entry("carol", "dev3", Access.ALLOW)  # 3, never pushed
        double.set_entry("dave", "dev4", Access.QUARANTINE)  # 4, never pushed
        await double.push_entry(double.set_entry("alice", "dev1", Access.BLOCK))  # 5
        await eventually(lambda: node.store.current().version == 5, what="gap filled")
        assert double.delta_calls[calls:] == [2]
        assert node.store.current().entry("carol", "dev3") is not None
        assert node.store.current().entry("dave", "dev4").access is Access.QUARANTINE


async def test_resync_and_a_pong_ahead_fetch_a_delta(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, keepalive_interval_s=0.2)
    async with running(config) as node:
        await eventually(lambda: settled(node), what="settled")
        double.set_entry("carol", "dev3", Access.ALLOW)  # 3: only a pong will tell
        await eventually(lambda: node.store.current().version == 3, what="pong ahead -> delta")
        assert double.keepalives and double.keepalives[0]["action"] == "keepalive"
        assert double.keepalives[0]["node_id"] == "node-1"
        double.set_entry("dave", "dev4", Access.ALLOW)  # 4
        await double.push(PushResync(cluster_id=CLUSTER, version=4))
        await eventually(lambda: node.store.current().version == 4, what="resync -> delta")


async def test_410_on_delta_falls_back_to_the_snapshot(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: settled(node), what="settled")
        double.delta_gone = True
        snapshots = node.link_status.snapshots
        double.set_entry("carol", "dev3", Access.ALLOW)
        await double.push(PushResync(cluster_id=CLUSTER, version=3))
        await eventually(lambda: node.store.current().version == 3)
        assert node.link_status.snapshots == snapshots + 1


async def test_planned_reconnect_and_delta_after_every_connect(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, reconnect_after_s=0.3, keepalive_interval_s=5)
    async with running(config) as node:
        await eventually(lambda: double.ws_connects >= 3, what="planned reconnects")
        await eventually(lambda: len(double.delta_calls) >= 3, what="delta per connect")
        assert node.link_status.state is not State.BACKING_OFF or double.ws_connects >= 3


async def test_revoked_push_stops_the_link_and_the_node_reports_it(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: settled(node), what="settled")
        await double.revoke()
        await eventually(lambda: node.link_status.state is State.REVOKED, what="revoked")
        connects = double.ws_connects
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503
        reasons = " ".join(ready.json()["reasons"])
        assert "revoked" in reasons or "rejected" in reasons
        # It keeps enforcing the policy it has, and never reconnects with the credential.
        assert node.store.current().version == 2
        metrics = (await admin_get(node, "/metrics")).text
        assert 'seg_gateway_push_connection_state{state="revoked"} 1.0' in metrics
        assert "seg_gateway_credential_rejected 1.0" in metrics
        assert double.ws_connects == connects


async def test_a_refused_handshake_is_fatal(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.revoked = True  # 401 on every call, $connect included
    async with running(make_config(double)) as node:
        await eventually(lambda: node.link_status.state is State.REJECTED, what="rejected")
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503
        reasons = " ".join(ready.json()["reasons"])
        assert "401" in reasons or "rejected" in reasons


async def test_restart_with_the_control_plane_down_enforces_from_disk(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double)
    async with running(config) as node:
        await eventually(lambda: node.store.current().version == 2)
        await double.push_entry(double.set_entry("alice", "dev1", Access.BLOCK))
        await eventually(lambda: node.store.current().version == 3)
        held = node.store.current()
    await double.stop()  # the control plane is gone
    async with running(config) as node:
        assert node.policy_source == "last-known-good"
        # The journal of signed input replays to the same policy, as fresh as the newest
        # signed issue time in it (no time outside a signature is stored).
        assert node.store.current().to_snapshot() == held.to_snapshot()
        assert node.store.current().confirmed_at == held.confirmed_at
        assert (await eas_post(node.listen_port, ALICE)).status_code == 403
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 200, ready.text  # fresh: contact was seconds ago
        policy = ready.json()["policy"]
        assert policy["signed"] is True and policy["rejections"]["total"] == 0
        await eventually(lambda: node.link_status.connects == 0 and node.link_status.last_error)


async def test_startup_snapshot_is_refreshed_with_an_etag(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, refresh_interval_s=0.2)
    async with running(config) as node:
        await eventually(lambda: node.link_status.not_modified >= 1, what="304 refresh")
        assert node.store.current().version == 2
        age_before = node.store.current().confirmed_at
        await eventually(lambda: node.store.current().confirmed_at > age_before)


def test_entry_helper_is_versioned() -> None:
    assert entry("a", "b", Access.ALLOW, 7).version == 7
    assert datetime.now(UTC).tzinfo is UTC


async def test_an_unanswered_keepalive_replaces_the_connection(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.answer_keepalives = False  # a path that swallows everything
    config = make_config(double, keepalive_interval_s=0.2, pong_timeout_s=0.3)
    async with running(config) as node:
        await eventually(lambda: node.link_status.connects >= 2, what="reconnect after silence")
        assert len(double.keepalives) >= 1 and node.link_status.pong_deadline_misses >= 1
