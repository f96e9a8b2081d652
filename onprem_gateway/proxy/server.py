"""The EAS listener: ``start_eas_server`` and the running ``EasServer``.

Usable in-process (tests, ``workers = 0``) and in each worker process of a node, where
the agent's runner binds the socket with SO_REUSEPORT and passes it in (``sock``).
Shutdown follows uvicorn's shape: stop accepting, close idle keep-alive connections,
let in-flight requests (held Pings) finish until the deadline, then cut the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from onprem_gateway.core.credentials import unseal, verify_any
from onprem_gateway.core.revocation import Affected
from onprem_gateway.ports import EventSink, PolicyView
from onprem_gateway.proxy.collector import Collector
from onprem_gateway.proxy.connection import ClientConnection, TlsClientConnection
from onprem_gateway.proxy.metrics import ProxyMetrics
from onprem_gateway.proxy.rate_limit import FailureLimiter
from onprem_gateway.proxy.settings import ProxySettings
from onprem_gateway.proxy.state import ServerState
from onprem_gateway.proxy.substitution import CredentialSubstituter, UnsealFn, VerifyFn
from onprem_gateway.proxy.tls_reads import tls_read_buffer

log = logging.getLogger(__name__)


class EasServer:
    def __init__(self, server: asyncio.Server, state: ServerState) -> None:
        self._server = server
        self.state = state
        self.metrics = state.metrics
        self._sweeper: asyncio.TimerHandle | None = None
        self.collector: Collector | None = None
        self._port = int(server.sockets[0].getsockname()[1]) if server.sockets else 0
        self._sweep_every = min(1.0, _smallest_timeout(state.settings) / 4)
        self._schedule_sweep()

    @property
    def port(self) -> int:
        return self._port

    def policy_changed(self, affected: Affected) -> int:
        """The policy just changed (the agent's listener on its store calls this right
        after the swap): every in-flight request it may affect is decided again and
        ended if no longer admitted. Returns how many were ended."""
        try:
            return self.state.revoke(affected)
        except Exception:  # a revocation bug must not break the policy update
            log.exception("revoking in-flight requests failed")
            return 0

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    def _schedule_sweep(self) -> None:
        self._sweeper = self.state.loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        try:
            self.state.sweep()
        except Exception:
            log.exception("sweeper failed")
        self._schedule_sweep()

    async def close(self, deadline_s: float) -> None:
        """Stop accepting; wait up to ``deadline_s`` for in-flight requests; close."""
        state = self.state
        state.closing = True
        self._server.close()
        for conn in list(state.connections):
            if conn.current is None:
                conn.close()
        if state.connections:
            try:
                async with asyncio.timeout(deadline_s):
                    await state.drained.wait()
            except TimeoutError:
                pass
        if state.connections:
            log.warning("shutdown deadline: cutting %d connections", len(state.connections))
        for conn in list(state.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.collector is not None:
            self.collector.stop()
        state.pool.close_all()
        state.cancel_tasks()
        await asyncio.sleep(0)


def _smallest_timeout(settings: ProxySettings) -> float:
    t = settings.timeouts
    return min(
        t.client_keepalive_s,
        t.header_s,
        t.request_idle_s,
        t.long_poll_idle_s,
        t.upstream_pool_idle_s,
    )


class DirectSSLObject(ssl.SSLObject):
    """``ssl.SSLObject`` whose per-record methods are the C object's own.

    The event loop's TLS layer (uvloop's and asyncio's ``SSLProtocol``) calls ``read``,
    ``write`` and ``pending`` of the object ``SSLContext.wrap_bio`` returns several times
    per request (``read`` until it raises ``SSLWantReadError``). ``ssl.SSLObject``
    defines each as a Python method that only forwards to ``self._sslobj`` (the C
    ``_ssl._SSLObject``), so every call costs a Python frame and every
    ``SSLWantReadError`` unwinds one. Binding the C methods on the instance skips that
    frame; arguments, results and exceptions are the C object's, i.e. what the Python
    methods forward (CPython 3.11-3.13 ``Lib/ssl.py``), except that ``read`` needs its
    size (both event loops always pass it). About 1.2 µs per request
    (``bench/tls_cost.py``; docs/gateway.md, "Performance: TLS on the device leg").
    """

    @classmethod
    def _create(cls, *args: object, **kwargs: object) -> DirectSSLObject:  # type: ignore[override]
        obj = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(obj, "_sslobj", None)
        if inner is not None:  # the forwarding target; absent would mean another CPython
            obj.read = inner.read  # type: ignore[method-assign]
            obj.write = inner.write  # type: ignore[method-assign]
            obj.pending = inner.pending  # type: ignore[method-assign]
        return obj  # type: ignore[return-value]


def server_ssl_context(settings: ProxySettings) -> ssl.SSLContext | None:
    """TLS 1.2+ with Python's default server ciphers (ECDHE + AES-GCM / ChaCha20, no
    compression, no TLS 1.0/1.1), HTTP/1.1 ALPN, session tickets on (a device that
    reconnects resumes without the certificate signature)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sslobject_class = DirectSSLObject
    return ctx


async def start_eas_server(
    settings: ProxySettings,
    policy: PolicyView,
    sink: EventSink,
    *,
    sock: socket.socket | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics: ProxyMetrics | None = None,
    credential_functions: tuple[VerifyFn, UnsealFn] | None = None,
    backlog: int = 4096,
    tune_gc: bool = False,
) -> EasServer:
    """Start serving EAS on ``sock`` (already bound, e.g. SO_REUSEPORT by the runner) or
    on ``host:port``. The caller closes it with ``await server.close(deadline_s)``.

    ``tune_gc``: for a process whose only job is this server (a node worker): its
    garbage collector runs in short passes only (``collector.py``)."""
    loop = asyncio.get_running_loop()
    verify_fn, unseal_fn = credential_functions or (verify_any, unseal)
    limits = settings.limits
    substitution = CredentialSubstituter(
        settings.cluster_private_key,
        verify=verify_fn,
        unseal=unseal_fn,
        max_entries=settings.credential_cache_size,
        limiter=FailureLimiter(limits.pw1_max_failures, limits.pw1_failure_window_s),
    )
    state = ServerState(
        settings,
        policy=policy,
        sink=sink,
        substitution=substitution,
        metrics=metrics or ProxyMetrics(),
        loop=loop,
    )
    ctx = server_ssl_context(settings)
    factory: Callable[[], ClientConnection]
    if ctx is None:
        factory = lambda: ClientConnection(state)  # noqa: E731
    else:
        read_buffer = tls_read_buffer()
        factory = lambda: TlsClientConnection(state, read_buffer)  # noqa: E731
    handshake = settings.timeouts.header_s if ctx else None
    if sock is not None:
        server = await loop.create_server(
            factory, sock=sock, ssl=ctx, backlog=backlog, ssl_handshake_timeout=handshake
        )
    else:
        server = await loop.create_server(
            factory, host, port, ssl=ctx, backlog=backlog, ssl_handshake_timeout=handshake
        )
    log.info(
        "EAS listener on %s (%s), upstream %s",
        server.sockets[0].getsockname() if server.sockets else "?",
        "https" if ctx else "http",
        settings.upstream.url,
    )
    if not settings.public_hosts:
        log.warning(
            "no public host names configured (SEG_GW_PUBLIC_HOSTS / SEG_GW_PUBLIC_URL): "
            "the Host header of device requests is not checked"
        )
    eas = EasServer(server, state)
    if tune_gc:
        eas.collector = Collector(state.metrics).start(loop)
    return eas
