"""Signed policy across the whole system (``seg up``'s control plane with two signing
keys in moto's KMS, two gateway processes that pin the first):

- node-2's WebSocket goes through a relay that can alter a push after it was signed (a
  man in the middle): the altered push is refused and counted, the node still converges
  through a verified delta, and the console's cluster view shows the alert;
- a rotation while a writer keeps changing entries: the next key is announced, activated
  and the old one retired, and every node keeps applying, refuses nothing, ends in sync,
  and after a restart still trusts the policy it stored (signed by the new key).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from seg_cli.demo import DemoDevice, wait_enforced
from seg_local.stack import Node, Stack, StackOptions

from .conftest import allowed_device, dump_logs_on_failure, eventually, metrics, override
from .ws_relay import WebSocketRelay

REJECTED = 'seg_gateway_policy_rejected_total{reason="payload_mismatch"}'


@dataclass
class World:
    stack: Stack
    relay: WebSocketRelay  # node-2's WebSocket path


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[World]:
    holder: dict[str, Stack] = {}
    relay = WebSocketRelay(lambda: str(holder["stack"].endpoints["ws_url"]))
    relay.start()
    stack = Stack(
        StackOptions(
            state_dir=tmp_path_factory.mktemp("seg"),
            nodes=2,
            demo_ping_hold_cap_s=2.0,
            signing_keys=2,
            signing_registry_ttl_s=1.0,  # handlers read a key change within a second
            gateway_env={
                "SEG_GW_REFRESH_INTERVAL_S": "1",  # key sets are learned at each refresh
                "SEG_GW_KEEPALIVE_INTERVAL_S": "1",
                "SEG_GW_BACKOFF_INITIAL_S": "0.2",
                "SEG_GW_BACKOFF_MAX_S": "1",
            },
            node_gateway_env={"node-2": {"SEG_GW_WS_URL": f"ws://127.0.0.1:{relay.port}/local"}},
        )
    )
    holder["stack"] = stack
    failed_before = request.session.testsfailed
    try:
        stack.start()
        yield World(stack, relay)
    finally:
        dump_logs_on_failure(stack, request, failed_before)
        stack.stop()
        relay.stop()


def readyz(node: Node) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(node.admin_url + "/readyz", timeout=5).json()
    return body


def console_nodes(stack: Stack) -> dict[str, dict[str, Any]]:
    with stack.console() as http:
        r = http.get(f"/console/v1/clusters/{stack.cluster_id}/nodes")
    assert r.status_code == 200, r.text
    return {n["node_id"]: n for n in r.json()}


def test_a_push_altered_in_flight_is_refused_and_the_console_shows_the_alert(
    world: World,
) -> None:
    stack, relay = world.stack, world.relay
    direct, relayed = stack.nodes
    device = allowed_device(stack)
    relay.tamper = True
    try:
        override(stack, device.user, device.device_id, "block")
        eventually(lambda: relay.tampered >= 1, what="a push altered in flight")
        eventually(lambda: metrics(relayed).get(REJECTED, 0) >= 1, what="refused on node-2")
        # Converged through a verified delta, never through the forged push: had the
        # forged "allow" been applied at that version, the delta (same version) could not
        # have replaced it, and the digest check would have found the node diverged.
        wait_enforced(stack.nodes, device.user, device.device_id, "block")
    finally:
        relay.tamper = False
    assert metrics(relayed)["seg_gateway_policy_digest_mismatch_total"] == 0
    assert metrics(direct).get(REJECTED, 0) == 0
    last = readyz(relayed)["policy"]["last_rejection"]
    assert (last["reason"], last["source"]) == ("payload_mismatch", "push")

    def alert() -> dict[str, Any] | None:
        shown = console_nodes(stack)
        node = shown.get(relayed.node_id, {})
        return shown if node.get("policy_rejections", 0) >= 1 else None

    shown = eventually(alert, what="the alert in the console's cluster view")
    assert shown[relayed.node_id]["last_rejection"] == "payload_mismatch"
    assert shown[relayed.node_id]["last_rejection_at"]
    assert shown[direct.node_id]["policy_rejections"] == 0


class Writer(threading.Thread):
    """Keeps changing entries (console overrides, alternating) until stopped."""

    def __init__(self, stack: Stack, devices: list[DemoDevice]) -> None:
        super().__init__(daemon=True)
        self.stack, self.devices = stack, devices
        self.last: dict[str, str] = {}
        self.writes = 0
        self.stop_now = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_now.is_set():
                device = self.devices[self.writes % len(self.devices)]
                action = "block" if self.last.get(device.device_id) != "block" else "allow"
                override(self.stack, device.user, device.device_id, action)
                self.last[device.device_id] = action
                self.writes += 1
                self.stop_now.wait(0.2)
        except BaseException as exc:
            self.error = exc


def keys_of(node: Node) -> dict[str, Any]:
    keys: dict[str, Any] = readyz(node)["policy"]["keys"]
    return keys


def test_a_rotation_while_pushes_flow_keeps_every_node_applying_and_in_sync(
    world: World,
) -> None:
    stack = world.stack
    arn_1, arn_2 = stack.endpoints["policy_signing_key_arns"]
    with stack.console() as http:
        listed = http.get("/console/v1/signing-keys").json()
    (old,) = listed["keys"]
    assert (old["key_arn"], old["state"]) == (arn_1, "active")
    refused_before = {n.node_id: readyz(n)["policy"]["rejections"]["total"] for n in stack.nodes}
    devices = [allowed_device(stack) for _ in range(3)]
    writer = Writer(stack, devices)
    writer.start()
    try:
        # 1. Announce the next key: every node learns it from a set the old key signed.
        with stack.console() as http:
            r = http.post("/console/v1/signing-keys", json={"key_arn": arn_2})
        assert r.status_code == 201, r.text
        new = next(k for k in r.json()["keys"] if k["state"] == "next")
        eventually(
            lambda: all(new["kid"] in keys_of(n)["learned"] for n in stack.nodes),
            what="every node trusts the next key",
        )
        # 2. Activate it: pushes are signed by it; every node re-fetches its policy
        # signed by it before the old key goes.
        writes = writer.writes
        with stack.console() as http:
            r = http.post(f"/console/v1/signing-keys/{new['kid']}/activate")
        assert r.status_code == 200, r.text
        eventually(
            lambda: all(
                readyz(n)["policy"]["journal"]["signed_by"] == [new["kid"]] for n in stack.nodes
            ),
            what="every node's stored policy is signed by the new key",
        )
        eventually(lambda: writer.writes > writes + 3, what="writes while the new key signs")
        # 3. Retire the old key: it leaves the key set (nodes that pinned it keep it).
        with stack.console() as http:
            r = http.post(f"/console/v1/signing-keys/{old['kid']}/retire")
        assert r.status_code == 200, r.text
        generation = r.json()["generation"]
        eventually(
            lambda: all(
                keys_of(n)["keys_version"] == generation and old["kid"] not in keys_of(n)["learned"]
                for n in stack.nodes
            ),
            what="every node dropped the retired key from its learned set",
        )
        writes = writer.writes
        eventually(lambda: writer.writes > writes + 3, what="writes after the retirement")
    finally:
        writer.stop_now.set()
        writer.join(10)
    assert writer.error is None, writer.error
    for device in devices:
        wait_enforced(stack.nodes, device.user, device.device_id, writer.last[device.device_id])
    for node in stack.nodes:
        body = readyz(node)
        assert body["policy"]["rejections"]["total"] == refused_before[node.node_id], body
    eventually(
        lambda: all(
            readyz(n)["control_plane"]["verification"]["verdict"] == "in_sync" for n in stack.nodes
        ),
        what="every node in sync",
    )
    # A restart: the stored policy, signed by the new key, verifies through the key
    # sets the node stored (its configuration still pins only the old key).
    node = stack.nodes[0]
    node.child.stop()
    stack.start_node(node)
    body = readyz(node)
    assert body["policy"]["source"] == "last-known-good" and body["policy"]["problem"] == ""
    assert body["policy"]["keys"]["pinned"] == [old["kid"]]
    for device in devices:
        wait_enforced([node], device.user, device.device_id, writer.last[device.device_id])
