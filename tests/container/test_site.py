"""Two gateway nodes as containers of the image built from this checkout, against the
local control plane (``seg_local``, HTTPS/WSS, on the host) and the demo mail server,
run the way docs/gateway.md tells admins to: read-only root, the state directory as a
volume, a tmpfs on /tmp, the image's own unprivileged user, configuration through
``SEG_GW_*`` variables and read-only mounted files.

- the containers run as uid 10001 with a read-only root, the node as PID 1, and the
  image's HEALTHCHECK passes;
- enrollment -> sync through a container -> block -> refused by both containers;
- a container replaced while the control plane is down enforces from its volume at once;
- ``podman stop`` drains a held Ping: the device gets the mail server's answer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyactivesync import FolderType

from seg_cli.demo import (
    DemoDevice,
    checkin,
    dashboard_row,
    eas_client,
    enroll,
    refused_reason,
    sync_inbox,
    wait_enforced,
)
from seg_local.stack import Stack, StackOptions
from tests.container.podman import (
    CONF_DIR,
    IMAGE_UID,
    STATE_DIR,
    GatewayContainer,
    Podman,
    copy_private,
    node_settings,
)
from tests.e2e.system.conftest import dump_logs_on_failure, eventually, metrics, new_device

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image

GRACE_S = 30  # SEG_GW_SHUTDOWN_GRACE_S in the containers; `podman stop --time` is more


@dataclass
class Site:
    stack: Stack
    nodes: list[GatewayContainer]
    ca: Path


def container_node(
    stack: Stack, podman: Podman, image: str, node_id: str, root: Path
) -> GatewayContainer:
    """A node configured exactly as ``seg up`` configures its process nodes
    (``Stack.node_env``), with the files it names mounted into the container."""
    assert stack.tls is not None
    state_dir, conf_dir = root / node_id / "state", root / node_id / "conf"
    state_dir.mkdir(parents=True)
    env = stack.node_env(node_id, state_dir)
    credential = state_dir / "credential"  # Stack writes it there for process nodes
    copy_private(
        {
            "tls.crt": stack.tls.cert,
            "tls.key": stack.tls.key,
            "ca.pem": stack.tls.ca_cert,
            "credential": credential,
        },
        conf_dir,
    )
    credential.unlink()  # the state volume holds state, not secrets
    settings = node_settings(
        env,
        {
            str(stack.tls.cert): f"{CONF_DIR}/tls.crt",
            str(stack.tls.key): f"{CONF_DIR}/tls.key",
            str(stack.tls.ca_cert): f"{CONF_DIR}/ca.pem",
            str(credential): f"{CONF_DIR}/credential",
            str(state_dir): STATE_DIR,
        },
    )
    # One EAS worker process besides the agent (the image's default is one per CPU), and
    # a drain long enough to see.
    settings |= {"SEG_GW_WORKERS": "1", "SEG_GW_SHUTDOWN_GRACE_S": str(GRACE_S)}
    return GatewayContainer(podman, image, node_id, state_dir, conf_dir, settings)


@pytest.fixture(scope="module")
def site(
    podman: Podman,
    gateway_image: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    # moto in a process of its own: the control plane can be stopped and come back with
    # its data. No process gateways: the nodes are the containers.
    stack = Stack(
        StackOptions(state_dir=root / "seg", nodes=0, external_moto=True, control_plane_tls=True)
    )
    nodes: list[GatewayContainer] = []
    failed_before = request.session.testsfailed
    try:
        stack.start()
        assert stack.tls is not None
        nodes = [container_node(stack, podman, gateway_image, f"ctr-{i}", root) for i in (1, 2)]
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        yield Site(stack, nodes, stack.tls.ca_cert)
    finally:
        if request.session.testsfailed != failed_before:
            for node in nodes:
                print(f"\n----- container {node.node_id} ({node.name}) -----\n{node.logs()}")
        dump_logs_on_failure(stack, request, failed_before)
        for node in nodes:
            node.remove()
        stack.stop()


def _allowed(stack: Stack, nodes: list[GatewayContainer]) -> DemoDevice:
    device = new_device()
    enroll(stack, device)
    checkin(stack, device, compromised=False)
    wait_enforced(nodes, device.user, device.device_id, "allow", timeout=90)  # type: ignore[arg-type]
    return device


def _override(stack: Stack, device: DemoDevice, action: str) -> None:
    with stack.console() as http:
        r = http.post(
            f"/console/v1/email-devices/{device.user}/{device.device_id.lower()}/override",
            json={"action": action, "reason": f"container tier {action}"},
        )
    assert r.status_code == 202, r.text


def _access(node: GatewayContainer, device: DemoDevice) -> str:
    r = httpx.get(
        node.admin_url + "/diagnostics/decision",
        params={"user": device.user, "device_id": device.device_id},
        timeout=5,
    )
    r.raise_for_status()
    return str(r.json()["access"])


def test_the_nodes_run_unprivileged_on_a_read_only_root(site: Site) -> None:
    probe = (
        "import errno, os\n"
        "def attempt(path):\n"
        "    try:\n"
        "        open(path, 'w').close()\n"
        "        return 'ok'\n"
        "    except OSError as exc:\n"
        "        return errno.errorcode[exc.errno]\n"
        "print(os.getuid(), os.getgid(), attempt('/usr/local/probe'), attempt('/etc/probe'),"
        f" attempt('/tmp/probe'), attempt('{STATE_DIR}/probe'))\n"
    )
    for node in site.nodes:
        config = node.podman.inspect("container", node.name)
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        out = node.exec("python", "-c", probe, check=True).stdout.split()
        assert out == [str(IMAGE_UID), str(IMAGE_UID), "EROFS", "EROFS", "ok", "ok"], out
        # The node itself is PID 1 (exec form: SIGTERM reaches it, no shell between).
        cmdline = node.exec("cat", "/proc/1/cmdline", check=True).stdout.split("\0")
        assert any(part.endswith("seg-gateway") for part in cmdline[:2]), cmdline
        assert "run" in cmdline, cmdline
        # What the node writes lands in the volume, owned by the image's user.
        lkg = node.state_dir / "policy.journal"
        eventually(lkg.exists, what=f"{node.node_id} persists its policy in the volume")
        if os.geteuid() == 0:  # rootful podman: the :U volume belongs to the image's uid
            assert lkg.stat().st_uid == IMAGE_UID
        # The image's HEALTHCHECK (kept by `--format docker`) passes.
        health = node.podman.run("healthcheck", "run", node.name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr


def test_enrollment_sync_block_refused_on_both_containers(site: Site) -> None:
    stack, nodes = site.stack, site.nodes
    device = _allowed(stack, nodes)
    for node in nodes:
        subjects = sync_inbox(node, site.ca, device)  # type: ignore[arg-type]
        assert "Welcome to the Secure Email Gateway demo" in subjects
    # The syncs reach the dashboard through the containers' access events.
    row = eventually(
        lambda: dashboard_row(stack, device), timeout=60, what="the sync reaches the dashboard"
    )
    assert row["last_node"] in {n.node_id for n in nodes}

    checkin(stack, device, compromised=True)
    wait_enforced(nodes, device.user, device.device_id, "block", timeout=90)  # type: ignore[arg-type]
    for node in nodes:
        assert refused_reason(node, site.ca, device) == "EAS status 129"  # type: ignore[arg-type]


def test_a_replaced_container_enforces_from_its_volume_with_the_control_plane_down(
    site: Site,
) -> None:
    stack, node = site.stack, site.nodes[0]
    allowed = _allowed(stack, site.nodes)
    blocked = _allowed(stack, site.nodes)
    _override(stack, blocked, "block")
    wait_enforced([node], blocked.user, blocked.device_id, "block", timeout=90)  # type: ignore[list-item]

    stack.stop_control_plane(kill=True)  # a crash: no goodbye to anyone
    stopped = node.stop(GRACE_S + 30)  # the node writes its policy on the way out
    assert stopped.returncode == 0, stopped.stderr
    assert node.state()["ExitCode"] == 0
    node.remove()
    node.start()  # a new container; only the volume is the same
    node.wait_ready(ready=False)  # alive; readiness is not the question here
    # The first answers after the start already enforce the persisted policy.
    assert _access(node, allowed) == "allow"
    assert _access(node, blocked) == "block"
    ready = httpx.get(node.admin_url + "/readyz", timeout=5).json()
    assert ready["policy"]["source"] != "none", ready
    assert ready["control_plane"]["state"] != "connected", ready
    assert sync_inbox(node, site.ca, allowed)  # type: ignore[arg-type]
    assert refused_reason(node, site.ca, blocked) == "EAS status 129"  # type: ignore[arg-type]

    stack.start_control_plane()  # same ports, same data
    eventually(
        lambda: metrics(node)['seg_gateway_push_connection_state{state="connected"}'] == 1.0,  # type: ignore[arg-type]
        timeout=90,
        what="the new container connects to the control plane",
    )


def test_podman_stop_drains_a_held_ping(site: Site) -> None:
    stack, node = site.stack, site.nodes[1]
    assert stack.mail is not None
    device = _allowed(stack, site.nodes)
    answer: dict[str, Any] = {}

    def ping() -> None:
        try:
            with eas_client(node, site.ca, device, timeout=180) as client:  # type: ignore[arg-type]
                client.provision()
                inbox = next(f for f in client.list_folders() if f.type == FolderType.INBOX)
                answer["inbox"] = inbox.id
                answer["result"] = client.ping(inbox.id, heartbeat=600, timeout=180)
        except Exception as exc:  # reported below
            answer["error"] = exc

    device_thread = threading.Thread(target=ping)
    device_thread.start()
    eventually(
        lambda: metrics(node)["seg_gateway_held"] >= 1 or "error" in answer,  # type: ignore[arg-type]
        timeout=60,
        what="the Ping is held by the node",
    )
    assert "error" not in answer, answer

    stop: dict[str, Any] = {}
    stopper = threading.Thread(target=lambda: stop.update(proc=node.stop(GRACE_S + 60)))
    stopper.start()

    def draining() -> bool:
        r = httpx.get(node.admin_url + "/readyz", timeout=5)
        return r.status_code == 503 and "shutting down" in r.json()["reasons"]

    eventually(draining, timeout=60, what="the node drains after SIGTERM")
    assert device_thread.is_alive(), answer  # still held while the node drains
    stack.mail.deliver(device.user, "ops@example.com", "While draining", "Mail arrives.")
    device_thread.join(120)
    stopper.join(GRACE_S + 120)
    assert "error" not in answer, answer
    result = answer["result"]
    assert result.status == "2" and answer["inbox"] in result.changed_folder_ids, result
    assert stop["proc"].returncode == 0, stop["proc"].stderr
    state = node.state()
    assert state["ExitCode"] == 0, state  # exited by itself, not killed at the timeout
    logs = node.logs(200)
    assert f"shutting down (grace {GRACE_S} s)" in logs and "stopped" in logs, logs
