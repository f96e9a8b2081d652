"""The dashboard in headless Chromium against the whole local system.

One ``seg_local.Stack`` per module, the one ``seg up`` runs: the control plane (moto, the
real FastAPI app under uvicorn, the SQS pollers running the real readers, the WebSocket
stand-in) in a process of its own, one real gateway node (``seg-gateway run``) in front of
the bundled demo mail server. And one browser per module. Data arrives the way it does in
production: devices sync through the gateway (or a gateway's batch is posted to
``/gateway/v1/access-events``), Device Services posts MDM events, the readers write the
view, the page polls the console API.
"""

from __future__ import annotations

import os
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from lambdas.api import routes_ui
from seg_contract import CONTRACT_VERSION
from seg_local.demo_mail import DEMO_PASSWORD
from seg_local.stack import Node, Stack, StackOptions

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
OAUTH_AUTHORIZE_URL = "https://seg-console.auth.example.invalid/oauth2/authorize"
# Waits, not timings: the readers write to moto in another process, and two cores are shared.
expect.set_options(timeout=15_000)


def event(
    user: str,
    device_id: str,
    *,
    node: str = "node-1",
    decision: str = "allow",
    reason: str = "compliant",
    rule: str = "entry",
    device_type: str = "iPhone",
    user_agent: str = "Apple-iPhone15C2/2104.200",
    command: str = "Sync",
    at: datetime | None = None,
) -> dict[str, Any]:
    """One access event as a gateway reports it (seg_contract.AccessEvent)."""
    return {
        "event_id": uuid.uuid4().hex,
        "at": (at or datetime.now(UTC)).isoformat(),
        "node_id": node,
        "user": user,
        "device_id": device_id,
        "device_type": device_type,
        "user_agent": user_agent,
        "command": command,
        "protocol_version": "16.1",
        "decision": decision,
        "reason": reason,
        "rule": rule,
    }


@dataclass
class Seg:
    """The running system, and the calls a device, a gateway, the MDM and an admin make."""

    stack: Stack
    http: httpx.Client
    eas: httpx.Client

    @property
    def console_url(self) -> str:
        return self.stack.endpoints["api_url"] + "/console/"

    @property
    def admin_token(self) -> str:
        return self.stack.admin_token

    @property
    def node(self) -> Node:
        return self.stack.nodes[0]

    def _api(self, path: str) -> str:
        return self.stack.endpoints["api_url"] + path

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.stack.admin_token}"}
        return self.http.request(method, self._api(path), headers=headers, **kwargs)

    def report(self, *events: dict[str, Any], node: str = "node-2") -> None:
        """Post a batch as a gateway node of the cluster does (a node id of its own, so
        the real node's reporting is not disturbed)."""
        response = self.http.post(
            self._api("/gateway/v1/access-events"),
            headers={"Authorization": f"Bearer {self.stack.credential}", "X-SEG-Node-Id": node},
            json={"contract_version": CONTRACT_VERSION, "node_id": node, "events": list(events)},
        )
        assert response.status_code == 202, response.text

    def mdm(self, body: dict[str, Any]) -> None:
        """Post a Device Services event (enrollment, check-in)."""
        body = {"event_id": uuid.uuid4().hex, "occurred_at": datetime.now(UTC).isoformat(), **body}
        response = self.http.post(
            self._api("/mdm/v1/events"),
            headers={"Authorization": f"Bearer {self.stack.device_services_key}"},
            json=body,
        )
        assert response.status_code == 202, response.text

    def enroll(self, user: str, device_id: str, *, compliant: bool = True, **device: str) -> None:
        """Enroll the device with the MDM and check it in (with a passcode or without)."""
        mdm_id = "mdm-" + uuid.uuid4().hex[:12]
        self.mdm(
            {
                "type": "enrollment",
                "mdm_device_id": mdm_id,
                "user": user,
                "eas_device_ids": [device_id],
                "platform": device.get("platform", "iOS"),
                "model": device.get("model", "iPhone 15"),
                "os_version": device.get("os_version", "17.4"),
                "managed": True,
            }
        )
        self.mdm(
            {
                "type": "checkin",
                "mdm_device_id": mdm_id,
                "compromised": False,
                "encrypted": True,
                "passcode": compliant,
                "os_version": device.get("os_version", "17.4"),
            }
        )

    def decision(self, user: str, device_id: str) -> str:
        """What the gateway node would decide for the device now (its diagnostics)."""
        response = self.http.get(
            self.node.admin_url + "/diagnostics/decision",
            params={
                "user": user,
                "device_id": device_id,
                "device_type": "iPhone",
                "command": "Sync",
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access"])

    def sync(self, user: str, device_id: str) -> httpx.Response:
        """One EAS request through the gateway, as a phone sends it (protocol 12.1, so a
        refusal is a plain HTTP 403; MS-ASHTTP 2.2.1.1.1.2)."""
        return self.eas.post(
            self.node.url + "/Microsoft-Server-ActiveSync",
            params={
                "Cmd": "FolderSync",
                "User": user,
                "DeviceId": device_id,
                "DeviceType": "iPhone",
            },
            headers={
                "MS-ASProtocolVersion": "12.1",
                "User-Agent": "Apple-iPhone15C2/2104.200",
                "Content-Type": "application/vnd.ms-sync.wbxml",
            },
            auth=(user, DEMO_PASSWORD),
            content=b"",
        )


# The dashboard's configuration, inherited by the control-plane process. The hosted UI's
# address is never reached: the tests answer it inside the browser (page.route).
UI_ENV = {
    routes_ui.ENV_REFRESH_SECONDS: "1",  # the page polls every second here (5 s by default)
    routes_ui.ENV_OAUTH_AUTHORIZE_URL: OAUTH_AUTHORIZE_URL,
    routes_ui.ENV_OAUTH_CLIENT_ID: "seg-console-test",
}


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seg]:
    saved = {name: os.environ.get(name) for name in UI_ENV}
    os.environ.update(UI_ENV)
    stack = Stack(
        StackOptions(
            state_dir=tmp_path_factory.mktemp("seg"),
            nodes=1,
            # Keepalives (which carry the node's policy version and spool depth to the
            # cluster panel) every 2 s instead of every 4 minutes.
            gateway_env={"SEG_GW_KEEPALIVE_INTERVAL_S": "2"},
        )
    )
    try:
        stack.start()
        assert stack.tls is not None
        tls = ssl.create_default_context(cafile=str(stack.tls.ca_cert))
        with httpx.Client(timeout=10) as http, httpx.Client(timeout=10, verify=tls) as eas:
            yield Seg(stack, http, eas)
    finally:
        stack.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageProblems:
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # CSP violations ("Refused to ...") and uncaught errors land here. So do the 401s
        # and 422s some tests provoke on purpose; a 404 (a missing file) is a problem.
        provoked = re.search(r"status of (401|403|422) ", message.text)
        if message.type == "error" and not provoked:
            self.errors.append(message.text)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) that must end without script errors."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems = PageProblems()
    page.on("console", problems.on_console)
    page.on("pageerror", lambda error: problems.errors.append(f"page error: {error}"))
    yield page
    context.close()
    assert problems.errors == [], problems.errors


def sign_in(page: Page, seg: Seg, role: str = "admin") -> None:
    page.goto(seg.console_url)
    page.get_by_label("Console token").fill(seg.stack.tokens[role])
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#main").wait_for(state="visible")
