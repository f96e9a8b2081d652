"""How the node runs G2a's EAS server: in its own process (``workers = 0``) or in worker
processes (``worker_pool.py``). Both build the server the same way, from the same
``ProxySettings`` (``proxy_settings``) and a listening socket made by ``listen_socket``;
only the transport of policy and events differs.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from onprem_gateway.agent.allocator import map_large_buffers
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.revocation import follow_policy
from onprem_gateway.config import GatewayConfig
from onprem_gateway.ports import EventSink, PolicyView
from onprem_gateway.proxy import EasServer, ProxyMetrics, start_eas_server
from onprem_gateway.proxy.settings import Limits, ProxySettings, Timeouts, Upstream


def read_cluster_key(config: GatewayConfig) -> str | None:
    if config.cluster_key_file is None:
        return None
    return config.cluster_key_file.read_text().strip()


def public_url(config: GatewayConfig, bound_port: int) -> str:
    """The URL devices use: configured, or this host's name and the bound port."""
    if config.public_url:
        return config.public_url.rstrip("/")
    scheme = "http" if config.listen_plain_http else "https"
    return f"{scheme}://{socket.getfqdn()}:{bound_port}"


def proxy_settings(config: GatewayConfig, bound_port: int) -> ProxySettings:
    """The data path's settings from the node's config (one mapping, used everywhere)."""
    return ProxySettings(
        upstream=Upstream(
            url=config.upstream_url.rstrip("/"),
            ca_bundle=config.upstream_ca_bundle,
            allow_plain_http=config.upstream_allow_plain_http,
        ),
        public_url=public_url(config, bound_port),
        tls_cert=None if config.listen_plain_http else config.tls_cert,
        tls_key=None if config.listen_plain_http else config.tls_key,
        trusted_proxies=config.trusted_proxies,
        public_hosts=frozenset(config.public_hosts),
        node_id=config.node_id,
        cluster_private_key=read_cluster_key(config),
        limits=Limits(
            **config.limits.model_dump(),
            max_connections_per_ip=config.max_connections_per_ip,
            pw1_max_failures=config.pw1_max_failures,
            pw1_failure_window_s=config.pw1_failure_window_s,
        ),
        timeouts=Timeouts(
            header_s=config.header_timeout_s,
            request_idle_s=config.request_idle_timeout_s,
            long_poll_idle_s=config.long_poll_timeout_s,
            upstream_connect_s=config.upstream_connect_timeout_s,
        ),
    )


def listen_socket(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port``; with ``reuse_port`` every worker binds its own
    socket to the same port and the kernel spreads new connections across them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class InProcessRunner:
    """The EAS server inside the agent's own event loop (tests, small sites)."""

    def __init__(self, config: GatewayConfig, policy: PolicyView, sink: EventSink) -> None:
        self._config = config
        self._policy = policy
        self._sink = sink
        self._server: EasServer | None = None
        self.metrics = ProxyMetrics()
        self.port = 0

    async def start(self) -> int:
        map_large_buffers()  # this process holds the device connections
        sock = listen_socket(self._config.listen_host, self._config.listen_port, reuse_port=False)
        try:
            settings = proxy_settings(self._config, int(sock.getsockname()[1]))
            self._server = await start_eas_server(
                settings, self._policy, self._sink, sock=sock, metrics=self.metrics
            )
        except BaseException:
            sock.close()
            raise
        if isinstance(self._policy, PolicyStore):
            follow_policy(self._policy, self._server)  # a block ends held requests
        self.port = self._server.port
        return self.port

    def proxy_metrics(self) -> dict[str, Any]:
        return self.metrics.snapshot()

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "index": 0,
                "pid": os.getpid(),
                "running": self._server is not None,
                "policy_version": self._policy.current().version,
                "in_process": True,
            }
        ]

    def problems(self) -> list[str]:
        return [] if self._server is not None else ["EAS listener not started"]

    async def close(self, grace_s: float) -> None:
        if self._server is not None:
            await self._server.close(grace_s)
