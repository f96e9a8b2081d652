"""A block ends the device's held requests on every node: a real EAS client holds a
Ping through each node of a two-node cluster (a ten-minute heartbeat, which the demo
mail server honours here), the admin blocks the device, and both Pings are answered
with EAS status 129 long before their heartbeat (issue: the Ping used to stay open until
its heartbeat ended, up to 3,540 s)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pyactivesync import FolderType, StatusError

from seg_cli.demo import checkin, eas_client, enroll, wait_enforced
from seg_local.stack import Stack

from .conftest import dump_logs_on_failure, eventually, metrics, new_device, start_stack

HEARTBEAT_S = 600  # what the client asks; the mail server holds the Ping that long
CLIENT_TIMEOUT_S = 120  # the client gives up on its own long before the heartbeat


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    # Pings are held for their whole heartbeat (no hold cap), unlike the flows' stack.
    s = start_stack(tmp_path_factory, nodes=2, demo_ping_hold_cap_s=None)
    failed_before = request.session.testsfailed
    try:
        yield s
    finally:
        dump_logs_on_failure(s, request, failed_before)
        s.stop()


def _block(stack: Stack, user: str, device_id: str) -> None:
    with stack.console() as http:
        r = http.post(
            f"/console/v1/email-devices/{user}/{device_id.lower()}/override",
            json={"action": "block", "reason": "e2e: block while held"},
        )
    assert r.status_code == 202, r.text


def test_a_device_blocked_while_its_ping_is_held_gets_status_129_on_both_nodes(
    stack: Stack,
) -> None:
    assert stack.tls is not None
    device = new_device()
    enroll(stack, device)
    checkin(stack, device, compromised=False)
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")

    # One device, one policy key (the mail server keeps the last one it issued for the
    # device): provision once, then hold a Ping through each node with that key.
    with eas_client(stack.nodes[0], stack.tls.ca_cert, device) as client:
        client.provision()
        inbox = next(f for f in client.list_folders() if f.type == FolderType.INBOX)
        policy_key = client._transport.policy_key

    outcomes: dict[str, Any] = {}

    def hold_a_ping(index: int) -> None:
        node = stack.nodes[index]
        try:
            with eas_client(node, stack.tls.ca_cert, device, timeout=CLIENT_TIMEOUT_S) as client:  # type: ignore[union-attr]
                client._transport.policy_key = policy_key  # provisioned above
                client._provisioned = True
                result = client.ping(inbox.id, heartbeat=HEARTBEAT_S, timeout=CLIENT_TIMEOUT_S)
                outcomes[node.node_id] = f"EAS status {result.status}"
        except StatusError as exc:
            outcomes[node.node_id] = f"EAS status {exc.code}"
        except Exception as exc:  # reported in the assertion below
            outcomes[node.node_id] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=hold_a_ping, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    eventually(
        lambda: outcomes or all(metrics(n).get("seg_gateway_held", 0) >= 1 for n in stack.nodes),
        timeout=60,
        what="a Ping held on each node",
    )
    assert outcomes == {}  # both still held

    _block(stack, device.user, device.device_id)
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 10)
    # Answered (not cut, not timed out) with the blocked status, well before the
    # Ping's own heartbeat and the client's timeout.
    assert outcomes == {n.node_id: "EAS status 129" for n in stack.nodes}
    for node in stack.nodes:
        counted = metrics(node)
        assert counted['seg_gateway_revoked_requests_total{outcome="answered"}'] >= 1
        assert counted.get("seg_gateway_held", 0) == 0
