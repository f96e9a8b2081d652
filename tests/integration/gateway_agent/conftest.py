"""Fixtures for the node agent's integration tests: a control-plane double, a trivial
upstream, a TLS pair, configs and running nodes, all on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from onprem_gateway.__main__ import main as gateway_main
from onprem_gateway.agent.node import Node
from onprem_gateway.config import GatewayConfig, load_config
from seg_contract import Access
from tests.integration.gateway_agent.control_plane_double import CREDENTIAL, ControlPlaneDouble


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    assert gateway_main(["make-cert", "--cert", str(cert), "--key", str(key)]) == 0
    return cert, key


class Upstream:
    """Answers every HTTP request with 200 and an empty body (keep-alive)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.requests = 0
        self.delay_s = 0.0  # hold each answer this long (a Ping held by the server)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, int]]:
    up = Upstream()
    port = await up.start()
    yield up, port
    up.close()


@pytest.fixture
async def double() -> AsyncIterator[ControlPlaneDouble]:
    cp = ControlPlaneDouble()
    cp.set_entry("alice", "dev1", Access.ALLOW)  # version 1
    cp.set_entry("bob", "dev2", Access.BLOCK)  # version 2
    await cp.start()
    yield cp
    await cp.stop()


ConfigFactory = Callable[..., GatewayConfig]


@pytest.fixture
def make_config(
    tmp_path: Path, tls_pair: tuple[Path, Path], upstream: tuple[Upstream, int]
) -> ConfigFactory:
    def make(double: ControlPlaneDouble | None = None, **overrides: Any) -> GatewayConfig:
        env = {
            "SEG_GW_LISTEN_HOST": "127.0.0.1",
            "SEG_GW_LISTEN_PORT": "0",
            "SEG_GW_TLS_CERT": str(tls_pair[0]),
            "SEG_GW_TLS_KEY": str(tls_pair[1]),
            "SEG_GW_UPSTREAM_URL": f"http://127.0.0.1:{upstream[1]}",
            "SEG_GW_UPSTREAM_ALLOW_PLAIN_HTTP": "true",
            "SEG_GW_NODE_ID": "node-1",
            "SEG_GW_STATE_DIR": str(tmp_path / "state"),
            "SEG_GW_ADMIN_HOST": "127.0.0.1",
            "SEG_GW_ADMIN_PORT": "0",
            "SEG_GW_WORKERS": "0",
            "SEG_GW_EVENT_FLUSH_INTERVAL_S": "0.05",
            "SEG_GW_BACKOFF_INITIAL_S": "0.05",
            "SEG_GW_BACKOFF_MAX_S": "0.2",
            "SEG_GW_HTTP_TIMEOUT_S": "2",
            "SEG_GW_SHUTDOWN_GRACE_S": "1",
        }
        if double is not None:
            env |= {
                "SEG_GW_API_URL": double.api_url,
                "SEG_GW_WS_URL": double.ws_url,
                "SEG_GW_CREDENTIAL": CREDENTIAL,
                "SEG_GW_CONTROL_PLANE_ALLOW_PLAIN_HTTP": "true",  # the double is plain http
                # The double's signing key, pinned as an operator pins the stack's.
                "SEG_GW_POLICY_SIGNING_KEYS": double.signer.public.spki_b64,
            }
        env |= {f"SEG_GW_{k.upper()}": str(v) for k, v in overrides.items()}
        return load_config(env=env)

    return make


@contextlib.asynccontextmanager
async def running(config: GatewayConfig) -> AsyncIterator[Node]:
    node = Node(config)
    await node.start()
    try:
        yield node
    finally:
        await node.shutdown()


async def admin_get(node: Node, path: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(f"http://127.0.0.1:{node.admin_port}{path}")


async def eas_post(
    port: int, query: str, version: str = "12.1", timeout: float = 10.0
) -> httpx.Response:
    """POST an EAS request; the device authenticates (Basic) as the query's ``User``."""
    headers = {"MS-ASProtocolVersion": version, "User-Agent": "TestPhone/1.0"}
    user = parse_qs(query).get("User", [""])[0]
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()
    async with httpx.AsyncClient(verify=False, trust_env=False, timeout=timeout) as client:
        return await client.post(
            f"https://127.0.0.1:{port}/Microsoft-Server-ActiveSync?{query}",
            headers=headers,
            content=b"",
        )
