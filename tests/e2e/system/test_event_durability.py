"""Nothing lost on the way up: with the control plane frozen (SIGSTOP), requests go
through a node, the node's processes are killed (SIGKILL) at several moments and
restarted, the control plane resumes (SIGCONT), and every access event reaches the
dashboard exactly once: one row per device, and the activity series counts each request
once, although batches were sent again after the kills.

The node runs one worker process (so an event crosses the worker -> agent channel
before the agent's spool) and reports every second with a one-second pong deadline, so
it also shows the frozen control plane as unresponsive."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from seg_local.stack import Node, Stack

from .conftest import dump_logs_on_failure, eventually, metrics, start_stack


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    s = start_stack(
        tmp_path_factory,
        nodes=1,
        gateway_env={
            "SEG_GW_WORKERS": "1",
            "SEG_GW_KEEPALIVE_INTERVAL_S": "1",
            "SEG_GW_PONG_TIMEOUT_S": "1",
            "SEG_GW_BACKOFF_INITIAL_S": "0.2",
            "SEG_GW_BACKOFF_MAX_S": "1",
            "SEG_GW_HTTP_TIMEOUT_S": "3",
        },
    )
    failed_before = request.session.testsfailed
    try:
        yield s
    finally:
        resume(s)  # never leave a stopped process behind
        dump_logs_on_failure(s, request, failed_before)
        s.stop()


def _group(stack: Stack) -> int:
    assert stack.control_plane is not None and stack.control_plane.proc is not None
    return stack.control_plane.proc.pid  # its own session: the pid is the group id


def freeze(stack: Stack) -> None:
    os.killpg(_group(stack), signal.SIGSTOP)


def resume(stack: Stack) -> None:
    with contextlib.suppress(ProcessLookupError, AssertionError):
        os.killpg(_group(stack), signal.SIGCONT)


def kill_node(node: Node) -> None:
    """SIGKILL the node's agent and its worker processes (one process group)."""
    proc = node.child.proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    node.child.stop()  # closes the log handle; the process is already gone


def send_requests(node: Node, ca: Path, tag: str, count: int) -> None:
    """``count`` Sync requests, each from a device of its own (unknown: blocked)."""
    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(verify=context, timeout=10, trust_env=False) as client:
        for i in range(count):
            user, device = f"{tag}u{i}", f"{tag.upper()}D{i}"
            r = client.post(
                f"{node.url}/Microsoft-Server-ActiveSync",
                params={"Cmd": "Sync", "User": user, "DeviceId": device, "DeviceType": "iPhone"},
                headers={"MS-ASProtocolVersion": "14.1", "User-Agent": "Durability/1.0"},
                auth=(user, "not-checked"),
                content=b"",
            )
            assert r.status_code < 500, r.text


def spooled(node: Node) -> float:
    return metrics(node)["seg_gateway_events_spooled_total"]


def rows(stack: Stack, tag: str) -> list[str]:
    with stack.console() as http:
        r = http.get("/console/v1/email-devices", params={"q": tag, "limit": 500})
    r.raise_for_status()
    return [f"{i['user']}/{i['device_id']}" for i in r.json()["items"]]


def requests_counted(stack: Stack) -> int:
    with stack.console() as http:
        r = http.get("/console/v1/email-devices/summary", params={"minutes": 60})
    r.raise_for_status()
    return sum(point["requests"] for point in r.json()["series"])


def test_every_event_reaches_the_view_exactly_once_across_kills(stack: Stack) -> None:
    assert stack.tls is not None
    node, ca, tag = stack.nodes[0], stack.tls.ca_cert, f"k{uuid.uuid4().hex[:6]}"
    eventually((node.state_dir / "policy.journal").exists, what="policy persisted")
    before = requests_counted(stack)

    freeze(stack)
    # The node notices: its keepalive goes unanswered past the pong deadline.
    eventually(
        lambda: httpx.get(node.admin_url + "/readyz", timeout=5).json()["control_plane"][
            "unresponsive"
        ],
        what="the frozen control plane shown as unresponsive",
    )
    assert httpx.get(node.admin_url + "/readyz", timeout=5).status_code == 200  # still serving

    # 1. Requests, then SIGKILL as soon as the node has them on disk (the POSTs hang).
    send_requests(node, ca, tag + "a", 30)
    eventually(lambda: spooled(node) >= 30, what="first events on disk")
    assert metrics(node)["seg_gateway_events_sent_total"] == 0
    kill_node(node)

    # 2. Restart (the control plane is still frozen), more requests, SIGKILL again.
    stack.start_node(node)
    send_requests(node, ca, tag + "b", 20)
    eventually(lambda: spooled(node) >= 20, what="second events on disk")
    assert metrics(node)["seg_gateway_spool_events"] == 50  # both runs' events, on disk
    kill_node(node)

    # 3. Restart, resume the control plane, and kill the node once more while it is
    #    delivering: batches it sent but did not live to acknowledge go out again.
    stack.start_node(node)
    resume(stack)
    eventually(lambda: rows(stack, tag), timeout=30, what="delivery under way")
    kill_node(node)
    stack.start_node(node)

    expected = sorted(
        [f"{tag}au{i}/{tag}ad{i}" for i in range(30)]
        + [f"{tag}bu{i}/{tag}bd{i}" for i in range(20)]
    )
    eventually(lambda: sorted(rows(stack, tag)) == expected, timeout=40, what="every row")
    eventually(lambda: metrics(node)["seg_gateway_spool_events"] == 0, what="the spool drained")
    # A row shows as soon as the payload reader journals its batch; the batch's counts
    # land at the end of the same message, and the last redelivered batches may still be
    # queued: wait for every request to be counted, then make sure none is counted twice.
    eventually(lambda: requests_counted(stack) - before >= 50, timeout=30, what="all counted")
    time.sleep(3)  # any redelivery still queued would be folded in by now
    counted = requests_counted(stack) - before
    print(f"\nevents: 50 sent, {counted} counted by the dashboard, rows {len(expected)}")
    assert counted == 50, "every request counted exactly once"
