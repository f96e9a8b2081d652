"""The demo ``seg up`` runs when no upstream is given (and ``seg demo``): a few devices
enroll through the Device Services API, sync through the gateway with a real EAS client,
one is reported compromised, the time until every gateway node enforces the block is
measured on each node's diagnostics endpoint, and its user's notice e-mail is shown."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import requests
from pyactivesync import Client, EASError, FolderType, StatusError

from seg_local.demo_mail import DEMO_PASSWORD
from seg_local.mailbox import Mail, read_mailbox
from seg_local.stack import Node, Stack


@dataclass(frozen=True)
class DemoDevice:
    user: str
    device_id: str
    device_type: str
    model: str
    os_version: str

    @property
    def mdm_device_id(self) -> str:
        return f"mdm-{self.user}-{self.device_id.lower()}"


DEVICES = (
    DemoDevice("alice", "ALICEIPHONE15", "iPhone", "iPhone 15", "iOS 18.1"),
    DemoDevice("bob", "BOBPIXEL8", "Android", "Pixel 8", "Android 15"),
    DemoDevice("carol", "CAROLIPAD", "iPad", "iPad Air", "iPadOS 18.1"),
)


class DemoError(RuntimeError):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat()


def post_mdm_event(stack: Stack, event: dict[str, Any]) -> None:
    """Post one event as Device Services does (``event_id`` and ``occurred_at`` default
    to a fresh id and now)."""
    event = {"event_id": uuid.uuid4().hex, "occurred_at": _now(), **event}
    r = httpx.post(
        f"{stack.endpoints['api_url']}/mdm/v1/events",
        json=event,
        headers={"Authorization": f"Bearer {stack.device_services_key}"},
        timeout=10,
        verify=stack.verify,
    )
    if r.status_code != 202:
        raise DemoError(f"Device Services event refused: HTTP {r.status_code} {r.text[:200]}")


def enroll(stack: Stack, device: DemoDevice) -> None:
    post_mdm_event(
        stack,
        {
            "type": "enrollment",
            "mdm_device_id": device.mdm_device_id,
            "user": device.user,
            "eas_device_ids": [device.device_id],
            "platform": device.device_type,
            "model": device.model,
            "os_version": device.os_version,
            "managed": True,
        },
    )


def checkin(stack: Stack, device: DemoDevice, *, compromised: bool) -> None:
    post_mdm_event(
        stack,
        {
            "type": "checkin",
            "mdm_device_id": device.mdm_device_id,
            "compromised": compromised,
            "encrypted": True,
            "passcode": True,
            "os_version": device.os_version,
        },
    )


def node_access(node: Node, user: str, device_id: str) -> str:
    r = httpx.get(
        f"{node.admin_url}/diagnostics/decision",
        params={"user": user, "device_id": device_id},
        timeout=5,
    )
    r.raise_for_status()
    return str(r.json()["access"])


def wait_enforced(
    nodes: list[Node],
    user: str,
    device_id: str,
    access: str,
    *,
    timeout: float = 30.0,
    start: float | None = None,
) -> dict[str, float]:
    """Poll every node concurrently; seconds from ``start`` (a ``time.monotonic()``
    value, default now) until each answers ``access``."""
    start = time.monotonic() if start is None else start
    times: dict[str, float] = {}
    lock = threading.Lock()

    def poll(node: Node) -> None:
        while time.monotonic() - start < timeout:
            try:
                if node_access(node, user, device_id) == access:
                    with lock:
                        times[node.node_id] = time.monotonic() - start
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.005)

    threads = [threading.Thread(target=poll, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [n.node_id for n in nodes if n.node_id not in times]
    if missing:
        raise DemoError(
            f"{user}/{device_id} is not '{access}' on {', '.join(missing)} after {timeout:.0f} s"
        )
    return times


def eas_client(node: Node, ca_cert: Path, device: DemoDevice, timeout: float = 15) -> Client:
    """A real EAS 16.1 client (pyactivesync) pointed at a gateway node."""
    client = Client(
        node.url.removeprefix("https://"),
        device.user,
        DEMO_PASSWORD,
        device_id=device.device_id,
        device_type=device.device_type,
        timeout=timeout,
    )
    session = client._transport.session
    session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace the local CA
    session.verify = str(ca_cert)
    return client


def sync_inbox(node: Node, ca_cert: Path, device: DemoDevice) -> list[str]:
    """Provision, list folders and sync the inbox; returns the subjects."""
    with eas_client(node, ca_cert, device) as client:
        client.provision()
        inbox = next(f for f in client.list_folders() if f.type == FolderType.INBOX)
        first = client.sync_folder(inbox.id)
        result = client.sync_folder(inbox.id, sync_key=first.sync_key)
        return [str(i.fields.get("Email.Subject", "")) for i in result.added]


def refused_reason(node: Node, ca_cert: Path, device: DemoDevice) -> str | None:
    """Why the gateway refused this device's sync, or None when it went through."""
    try:
        sync_inbox(node, ca_cert, device)
    except StatusError as exc:
        return f"EAS status {exc.code}"
    except requests.HTTPError as exc:
        return f"HTTP {exc.response.status_code}" if exc.response is not None else str(exc)
    except EASError as exc:
        return str(exc)
    return None


def dashboard_row(stack: Stack, device: DemoDevice) -> dict[str, Any] | None:
    with stack.console() as http:
        r = http.get("/console/v1/email-devices", params={"q": device.user})
    if r.status_code != 200:
        return None
    for item in r.json().get("items", []):
        if item.get("device_id") == device.device_id.lower():
            row: dict[str, Any] = item
            return row
    return None


def wait_dashboard(
    stack: Stack, device: DemoDevice, access: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = dashboard_row(stack, device)
        if row and row.get("access_state") == access:
            return row
        time.sleep(0.2)
    raise DemoError(
        f"the dashboard does not show {device.user}/{device.device_id} as {access} "
        f"after {timeout:.0f} s (last: {row})"
    )


def run_demo(stack: Stack, say: Callable[[str], None] = print) -> dict[str, float]:
    """The scripted story; returns per-node seconds from the compliance change to
    enforcement."""
    assert stack.tls is not None
    ca = stack.tls.ca_cert
    say("1. Device Services enrolls three devices (compliant check-ins)")
    for d in DEVICES:
        enroll(stack, d)
        checkin(stack, d, compromised=False)
    for d in DEVICES:
        wait_enforced(stack.nodes, d.user, d.device_id, "allow")
        say(f"   {d.user:6} {d.device_id:14} allowed on {len(stack.nodes)} gateway node(s)")
    say("2. Each device syncs mail through the gateway (EAS 16.1, pyactivesync)")
    for i, d in enumerate(DEVICES):
        node = stack.nodes[i % len(stack.nodes)]
        subjects = sync_inbox(node, ca, d)
        say(f"   {d.user:6} via {node.node_id}: {len(subjects)} messages, e.g. {subjects[0]!r}")
    victim = DEVICES[1]
    say(f"3. The MDM reports {victim.user}'s {victim.model} compromised")
    changed_at = time.monotonic()
    checkin(stack, victim, compromised=True)
    times = wait_enforced(stack.nodes, victim.user, victim.device_id, "block", start=changed_at)
    for node_id, seconds in sorted(times.items()):
        say(f"   blocked on {node_id} {seconds * 1000:.0f} ms after the check-in was posted")
    say("4. Its next sync is refused by every node")
    for node in stack.nodes:
        reason = refused_reason(node, ca, victim)
        if reason is None:
            raise DemoError(f"{node.node_id} let the compromised device sync")
        say(f"   {node.node_id}: refused ({reason})")
    row = wait_dashboard(stack, victim, "block")
    say(
        f"5. The dashboard shows {victim.user}/{row['device_id']}: {row['access_state']} "
        f"({row.get('reason', '')})"
    )
    mail = wait_notice(stack, victim)
    say(f"6. {victim.user} gets one e-mail ({mail.path}):")
    say(f"   To: {mail.to}")
    say(f"   Subject: {mail.subject}")
    for line in mail.body.splitlines():
        if line.startswith(("Why:", "What to do:")):
            say(f"   {line}")
    return times


def wait_notice(stack: Stack, device: DemoDevice, timeout: float = 30.0) -> Mail:
    """The notice e-mail the device's user got (the local mailbox: moto's SES)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for mail in read_mailbox(stack.mailbox):
            if mail.to.startswith(device.user + "@"):
                return mail
        time.sleep(0.2)
    raise DemoError(f"no notice e-mail reached {device.user} after {timeout:.0f} s")
