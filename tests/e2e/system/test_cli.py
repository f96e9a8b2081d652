"""The ``seg`` command line: ``seg up --upstream`` in the foreground with Ctrl-C, the
console commands against the system it started, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seg_cli.main import main
from seg_local.demo_mail import DemoMailServer, server_ssl_context
from seg_local.tls import make_local_tls

SEG = [sys.executable, "-m", "seg_cli.main"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["devices", "list"], "no control plane"),
        (["devices", "list", "--api", "ftp://x", "--token", "t"], "must be an http(s) URL"),
        (["cluster", "list", "--api", "http://127.0.0.1:9", "--token", "t"], "cannot reach"),
        (["up", "--nodes", "0"], "--nodes must be between 1 and 16"),
        (["up", "--upstream", "mail.example.com"], "--upstream must be an http(s) URL"),
        (["up", "--upstream", "https://x", "--upstream-ca", "/nonexistent"], "is not a file"),
    ],
)
def test_errors_are_one_line_and_non_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv, "--state-dir", str(tmp_path))
    assert code == 1
    assert err.startswith("seg: error: ") and message in err
    assert err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["device", "block", "alice"])
    assert info.value.code == 2


@pytest.fixture(scope="module")
def seg_up(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """``seg up --upstream`` (no demo) in front of a mail server of our own."""
    tls = make_local_tls(tmp_path_factory.mktemp("upstream-tls"))
    mail = DemoMailServer()
    port = mail.start(ssl_context=server_ssl_context(tls.cert, tls.key))
    state_dir = tmp_path_factory.mktemp("seg")
    proc = subprocess.Popen(
        [
            *SEG,
            "up",
            "--nodes",
            "1",
            "--upstream",
            f"https://127.0.0.1:{port}",
            "--upstream-ca",
            str(tls.ca_cert),
            "--state-dir",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Running." in line or not line:
            break
    assert "Running." in "".join(lines), "".join(lines)
    assert "Policy key:" in "".join(lines)  # what the nodes pin
    try:
        yield state_dir, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        mail.stop()


def test_console_commands_against_seg_up(
    capsys: pytest.CaptureFixture[str], seg_up: tuple[Path, subprocess.Popen[str]]
) -> None:
    state_dir, _ = seg_up
    sd = ["--state-dir", str(state_dir)]
    code, out, _ = run(capsys, "cluster", "list", *sd, "--json")
    assert code == 0 and json.loads(out)[0]["name"] == "local"
    cluster_id = json.loads(out)[0]["cluster_id"]
    code, out, _ = run(capsys, "cluster", "nodes", cluster_id, *sd, "--json")
    assert code == 0 and [n["node_id"] for n in json.loads(out)] == ["node-1"]
    code, out, _ = run(capsys, "cluster", "nodes", cluster_id, *sd)
    header = out.splitlines()[0].split()
    assert code == 0 and header[:5] == [
        "NODE_ID",
        "CONNECTED",
        "POLICY_VERSION",
        "DIGEST_CHECK",
        "LAST_VERIFIED_AT",
    ]
    code, out, _ = run(capsys, "cluster", "list", *sd)
    assert code == 0 and out.startswith("CLUSTER_ID") and "local" in out

    code, out, err = run(capsys, "device", "block", "Alice", "PHONE1", "--reason", "lost", *sd)
    assert code == 0, err
    deadline = time.monotonic() + 20
    while True:
        code, out, err = run(capsys, "device", "decision", "alice", "phone1", *sd)
        if code == 0:
            decision = json.loads(out)
            if decision["nodes"]["node-1"].get("access") == "block":
                break
        assert time.monotonic() < deadline, out + err
        time.sleep(0.2)
    assert decision["nodes"]["node-1"]["entry"]["source"] == "manual"

    code, out, err = run(capsys, "devices", "list", *sd, "--json")
    assert code == 0 and "items" in json.loads(out), err

    code, _, err = run(capsys, "devices", "list", *sd, "--token", "wrong")
    assert code == 1 and "HTTP 401" in err

    # Roles: the state file holds a token per role; a viewer reads but may not act.
    code, out, err = run(capsys, "whoami", *sd, "--role", "viewer", "--json")
    assert code == 0 and json.loads(out)["role"] == "viewer", err
    code, _, err = run(capsys, "device", "allow", "alice", "phone1", *sd, "--role", "viewer")
    assert code == 1 and "HTTP 403" in err and "needs the operator role" in err
    code, out, err = run(
        capsys, "device", "note", "alice", "phone1", "lost", *sd, "--role", "operator"
    )
    assert code == 0, err
    # The audit trail names who did what, and the export is CSV.
    code, out, err = run(capsys, "audit", *sd, "--json")
    actions = [(r["action"], r["actor"]) for r in json.loads(out)["items"]]
    assert ("device.note", "operator") in actions and ("device.block", "admin") in actions, err
    code, out, err = run(capsys, "audit", *sd, "--export", "csv")
    assert code == 0 and out.startswith("at,actor,role,action"), err
    code, out, err = run(capsys, "devices", "export", *sd, "--access", "block")
    assert code == 0 and out.startswith("user,device_id,cluster_id"), err

    code, _, err = run(capsys, "up", *sd)
    assert code == 1 and "already runs" in err


def test_signing_key_commands_against_seg_up(
    capsys: pytest.CaptureFixture[str], seg_up: tuple[Path, subprocess.Popen[str]]
) -> None:
    state_dir, _ = seg_up
    sd = ["--state-dir", str(state_dir)]
    pinned = json.loads((state_dir / "state.json").read_text())["policy_signing_keys"]
    assert len(pinned) == 1

    # Registering prints the credential and, with it, the keys the nodes must pin.
    code, out, err = run(capsys, "cluster", "register", "branch", *sd)
    assert code == 0, err
    registered = json.loads(out)
    assert registered["credential"].startswith("segc_")
    assert registered["policy_signing_keys"] == pinned
    assert registered["gateway_env"] == {"SEG_GW_POLICY_SIGNING_KEYS": pinned[0]}

    code, out, err = run(capsys, "cluster", "signing-keys", *sd)
    assert code == 0, err
    assert out.startswith("KID") and "active" in out and pinned[0] in out

    code, out, err = run(capsys, "cluster", "signing-keys", *sd, "--json")
    kid = json.loads(out)["keys"][0]["kid"]
    code, _, err = run(capsys, "cluster", "rotate-signing-key", "retire", kid, *sd)
    assert code == 1 and "HTTP 409" in err and "is active" in err
    other = "arn:aws:kms:us-east-1:123456789012:key/0000"
    code, _, err = run(capsys, "cluster", "rotate-signing-key", "begin", other, *sd)
    assert code == 1 and "HTTP 422" in err and "not one of this stack's" in err


def test_ctrl_c_stops_everything(seg_up: tuple[Path, subprocess.Popen[str]]) -> None:
    state_dir, proc = seg_up
    state = json.loads((state_dir / "state.json").read_text())
    node_pid = state["nodes"][0]["pid"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert not (state_dir / "state.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(node_pid, 0)
