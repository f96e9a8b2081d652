"""The node as real processes: the Dockerfile's ENTRYPOINT command line, the multi-process
runner (a push reaches every worker), graceful shutdown and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from seg_contract import Access, ClusterSettings, DeviceEntry, EntrySource, PolicySnapshot
from seg_contract.signing import Kind, LocalSigner, encode_record, issue
from tests.integration.gateway_agent.conftest import eas_post
from tests.integration.gateway_agent.control_plane_double import (
    CREDENTIAL,
    ControlPlaneDouble,
    eventually,
)

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form argument list of a Dockerfile instruction (ENTRYPOINT, CMD...)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for start, line in enumerate(lines):
        if line.startswith(name + " "):
            text, i = line[len(name) + 1 :], start
            while text.endswith("\\"):
                i += 1
                text = text[:-1] + lines[i].strip()
            if text.startswith("CMD "):  # HEALTHCHECK [options] CMD [...]
                text = text[4:]
            return json.loads(text[text.index("[") :])
    raise AssertionError(f"no {name} in the Dockerfile")


def base_env(tmp_path: Path, tls: tuple[Path, Path], upstream_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEG_GW_")}
    env |= {
        "SEG_GW_LISTEN_HOST": "127.0.0.1",
        "SEG_GW_LISTEN_PORT": "0",
        "SEG_GW_TLS_CERT": str(tls[0]),
        "SEG_GW_TLS_KEY": str(tls[1]),
        "SEG_GW_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP": "true",
        "SEG_GW_STATE_DIR": str(tmp_path / "state"),
        "SEG_GW_ADMIN_HOST": "127.0.0.1",
        "SEG_GW_ADMIN_PORT": "0",
        "SEG_GW_NODE_ID": "proc-node",
        "SEG_GW_SHUTDOWN_GRACE_S": "2",
        "SEG_GW_EVENT_FLUSH_INTERVAL_S": "0.05",
        "SEG_GW_BACKOFF_INITIAL_S": "0.1",
        "SEG_GW_BACKOFF_MAX_S": "0.5",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return env


def two_workers_env(
    tmp_path: Path, tls: tuple[Path, Path], upstream_port: int, double: ControlPlaneDouble
) -> dict[str, str]:
    """A node with two worker processes, linked to the control-plane double."""
    return base_env(tmp_path, tls, upstream_port) | {
        "SEG_GW_WORKERS": "2",
        "SEG_GW_API_URL": double.api_url,
        "SEG_GW_WS_URL": double.ws_url,
        "SEG_GW_CREDENTIAL": CREDENTIAL,
        "SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP": "true",
        "SEG_GW_POLICY_SIGNING_KEYS": double.signer.public.spki_b64,
    }


@asynccontextmanager
async def gateway_process(
    argv: list[str], env: dict[str, str], state_dir: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, object]]]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=str(ROOT), stderr=asyncio.subprocess.PIPE
    )
    runtime = state_dir / "runtime.json"
    try:
        await eventually(
            lambda: runtime.exists() or proc.returncode is not None, timeout=60, what="runtime"
        )
        assert proc.returncode is None, "the gateway exited during start-up"
        yield proc, json.loads(runtime.read_text())
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


POLICY_SIGNER = LocalSigner.generate()  # the key that signed the air-gapped policy file


def write_policy(path: Path) -> Path:
    """A signed policy file (as `seg-gateway fetch-policy` writes one) of a cluster whose
    key ``POLICY_SIGNER`` the node pins."""
    now = datetime.now(UTC)
    snap = PolicySnapshot(
        cluster_id="airgap",
        version=7,
        generated_at=now,
        settings=ClusterSettings(),
        devices=(
            DeviceEntry(
                user="alice",
                device_id="dev1",
                access=Access.ALLOW,
                reason="ok",
                source=EntrySource.MANUAL,
                version=7,
                updated_at=now,
            ),
        ),
    )
    signed = issue(
        POLICY_SIGNER,
        cluster_id=snap.cluster_id,
        kind=Kind.SNAPSHOT,
        version=snap.version,
        payload=snap.model_dump_json().encode(),
        issued_at_ms=int(now.timestamp() * 1000),
    )
    path.write_bytes(encode_record(signed))
    return path


AIR_GAPPED_PIN = {"SEG_GW_POLICY_SIGNING_KEYS": POLICY_SIGNER.public.spki_b64}


async def test_the_dockerfile_entrypoint_runs_a_ready_node_and_stops_cleanly(
    tmp_path: Path, tls_pair: tuple[Path, Path], upstream
) -> None:  # type: ignore[no-untyped-def]
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    assert entrypoint[:2] == ["seg-gateway", "run"]
    env = base_env(tmp_path, tls_pair, upstream[1])
    env["SEG_GW_WORKERS"] = "1"
    env["SEG_GW_POLICY_FILE"] = str(write_policy(tmp_path / "policy.signed"))
    env |= AIR_GAPPED_PIN
    argv = [str(BIN / entrypoint[0]), *entrypoint[1:]]
    async with gateway_process(argv, env, tmp_path / "state") as (proc, runtime):
        admin = f"http://127.0.0.1:{runtime['admin_port']}"
        async with httpx.AsyncClient(trust_env=False) as client:
            ready = await client.get(admin + "/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["policy"]["version"] == 7
        allowed = "Cmd=Sync&User=alice&DeviceId=dev1&DeviceType=iPhone"
        assert (await eas_post(int(runtime["listen_port"]), allowed)).status_code == 200
        # The image's HEALTHCHECK command works against this node too.
        health = dockerfile_instruction("HEALTHCHECK")
        assert health[0] == "python"
        check = await asyncio.create_subprocess_exec(
            sys.executable,
            *health[1:],
            env=env | {"SEG_GW_ADMIN_PORT": str(runtime["admin_port"])},
        )
        assert await check.wait() == 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert not (tmp_path / "state" / "runtime.json").exists()


async def test_a_push_reaches_every_worker_process(
    tmp_path: Path, tls_pair: tuple[Path, Path], upstream, double: ControlPlaneDouble
) -> None:  # type: ignore[no-untyped-def]
    env = two_workers_env(tmp_path, tls_pair, upstream[1], double)
    argv = [str(BIN / "seg-gateway"), "run"]
    async with gateway_process(argv, env, tmp_path / "state") as (proc, runtime):
        admin = f"http://127.0.0.1:{runtime['admin_port']}"
        port = int(runtime["listen_port"])

        async def workers() -> list[dict[str, object]]:
            async with httpx.AsyncClient(trust_env=False) as client:
                return (await client.get(admin + "/readyz")).json()["workers"]

        versions: list[object] = []

        async def poll(version: int) -> None:
            for _ in range(500):
                versions[:] = [w["policy_version"] for w in await workers()]
                if versions == [version, version]:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"workers at {versions}, wanted {version}")

        await poll(2)
        await eventually(lambda: double.sockets, timeout=10, what="websocket")
        alice = "Cmd=Sync&User=alice&DeviceId=dev1&DeviceType=iPhone"
        assert (await eas_post(port, alice)).status_code == 200
        await double.push_entry(double.set_entry("alice", "dev1", Access.BLOCK))
        await poll(3)
        # Whichever worker the kernel picks, the device is now blocked.
        statuses = [(await eas_post(port, alice)).status_code for _ in range(6)]
        assert statuses == [403] * 6
        # The workers' events reach the control plane through the agent.
        await eventually(lambda: len(double.events) >= 7, timeout=10, what="events")
        # A worker that dies is replaced and catches up with the policy.
        first = (await workers())[0]
        os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[arg-type]
        for _ in range(500):
            now = (await workers())[0]
            if now["restarts"] == 1 and now["ready"] and now["policy_version"] == 3:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"worker not restarted: {now}")
        assert (await eas_post(port, alice)).status_code == 403
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_a_push_that_blocks_a_device_ends_its_held_pings_in_every_worker(
    tmp_path: Path, tls_pair: tuple[Path, Path], upstream, double: ControlPlaneDouble
) -> None:  # type: ignore[no-untyped-def]
    up, upstream_port = upstream
    env = two_workers_env(tmp_path, tls_pair, upstream_port, double)
    argv = [str(BIN / "seg-gateway"), "run"]
    async with gateway_process(argv, env, tmp_path / "state") as (proc, runtime):
        admin = f"http://127.0.0.1:{runtime['admin_port']}"
        port = int(runtime["listen_port"])
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(500):
                workers = (await client.get(admin + "/readyz")).json()["workers"]
                if [w["policy_version"] for w in workers] == [2, 2]:
                    break
                await asyncio.sleep(0.02)
        await eventually(lambda: double.sockets, timeout=10, what="websocket")
        ping = "Cmd=Ping&User=alice&DeviceId=dev1&DeviceType=iPhone"
        assert (await eas_post(port, ping)).status_code == 200  # allowed, answered at once
        up.delay_s = 120.0  # the mail server now holds every Ping (heartbeat)
        held = [
            asyncio.create_task(eas_post(port, ping, version="14.1", timeout=60))
            for _ in range(8)  # spread over both workers by the kernel
        ]
        await eventually(lambda: up.requests >= 9, timeout=20, what="Pings held upstream")
        await double.push_entry(double.set_entry("alice", "dev1", Access.BLOCK))
        answers = await asyncio.wait_for(asyncio.gather(*held), 20)
        # Each held Ping got the blocked answer for EAS 14.1: 200 + WBXML status 129.
        assert [a.status_code for a in answers] == [200] * 8
        assert all(b"129" in a.content for a in answers)
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(100):  # workers report their counters every second
                text = (await client.get(admin + "/metrics")).text
                if 'seg_gateway_revoked_requests_total{outcome="answered"} 8.0' in text:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the revocations are not in /metrics")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_an_invalid_configuration_exits_2_listing_every_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEG_GW_")}
    env |= {"SEG_GW_WORKERS": "many", "SEG_GW_LISTEN_PORT": "70000", "SEG_GW_COLOUR": "x"}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "seg-gateway"), "run", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 2, text
    for expected in (
        "SEG_GW_WORKERS",
        "SEG_GW_LISTEN_PORT must be less than or equal to 65535 (got '70000')",
        "unknown environment variable SEG_GW_COLOUR",
        "SEG_GW_UPSTREAM_URL is required",
        "no policy source",
    ):
        assert expected in text, (expected, text)
    assert shlex.split("seg-gateway run")  # the documented command line parses


async def test_a_taken_listen_port_exits_1_with_a_message(
    tmp_path: Path, tls_pair: tuple[Path, Path], upstream
) -> None:  # type: ignore[no-untyped-def]
    taken = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    env = base_env(tmp_path, tls_pair, upstream[1])
    env |= {
        "SEG_GW_WORKERS": "0",
        "SEG_GW_LISTEN_PORT": str(taken.sockets[0].getsockname()[1]),
        "SEG_GW_POLICY_FILE": str(write_policy(tmp_path / "policy.signed")),
        **AIR_GAPPED_PIN,
    }
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "seg-gateway"), "run", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    taken.close()
    assert proc.returncode == 1, err.decode()
    assert "start-up failed" in err.decode() and "in use" in err.decode()
