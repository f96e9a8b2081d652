"""End-to-end fixtures: the whole system as ``seg up`` runs it (``seg_local.stack``):
the control plane process, gateway node processes with TLS, the demo mail server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from seg_cli.demo import DemoDevice, checkin, enroll, wait_enforced
from seg_local.stack import Node, Stack, StackOptions

# Figures a test measured (never asserted: tests assert behaviour, bench/ measures), shown
# in the terminal summary of every run, whatever the capture and -r options.
_FIGURES: list[str] = []


def report_figure(line: str) -> None:
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("system tier figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


def start_stack(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Stack:
    # Pings answered within 2 s unless a test module asks otherwise (None: the heartbeat).
    options = {"demo_ping_hold_cap_s": 2.0, **options}
    stack = Stack(StackOptions(state_dir=tmp_path_factory.mktemp("seg"), **options))
    stack.start()
    return stack


def dump_logs_on_failure(stack: Stack, request: pytest.FixtureRequest, failed_before: int) -> None:
    """When a test of the module failed, show the tail of every process's log (the
    failure is usually explained there)."""
    if request.session.testsfailed == failed_before:
        return
    logs = stack.state_dir / "logs"
    for path in sorted(logs.glob("*.log")) if logs.exists() else []:
        lines = path.read_text(errors="replace").splitlines()[-40:]
        print(f"\n----- {path.name} (last {len(lines)} lines) -----\n" + "\n".join(lines))


def serve(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A module fixture's body: yield the started stack, then show the logs if a test
    of the module failed, and stop it."""
    failed_before = request.session.testsfailed
    try:
        yield stack
    finally:
        dump_logs_on_failure(stack, request, failed_before)
        stack.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    # HTTPS/WSS between gateways and control plane, as with API Gateway; the EventBridge
    # stand-in fires the scheduled check-in every 1.8 s.
    s = start_stack(tmp_path_factory, nodes=2, schedule_minutes=0.03, control_plane_tls=True)
    yield from serve(s, request)


def new_device(user: str = "") -> DemoDevice:
    tag = uuid.uuid4().hex[:8]
    return DemoDevice(user or f"user{tag}", f"DEV{tag}".upper(), "iPhone", "iPhone 15", "iOS 18")


def allowed_device(stack: Stack) -> DemoDevice:
    """A new device, enrolled and compliant: allowed on every node."""
    device = new_device()
    enroll(stack, device)
    checkin(stack, device, compromised=False)
    wait_enforced(stack.nodes, device.user, device.device_id, "allow")
    return device


def override(stack: Stack, user: str, device_id: str, action: str) -> None:
    """A console override (block, allow, clear), as an admin makes it."""
    with stack.console() as http:
        r = http.post(
            f"/console/v1/email-devices/{user}/{device_id.lower()}/override",
            json={"action": action, "reason": f"e2e {action}"},
        )
    assert r.status_code == 202, r.text


def metrics(node: Node) -> dict[str, float]:
    """The node's Prometheus samples, keyed ``name{labels}`` as exposed."""
    text = httpx.get(node.admin_url + "/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, KeyError, AssertionError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"not true after {timeout} s: {what} (last: {last!r})")
