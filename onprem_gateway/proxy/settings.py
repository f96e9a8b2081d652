"""The EAS listener's settings: one frozen object, built once (by the node agent's config,
or directly by tests and bench scripts) and read on the request path without checks.

Every limit carries a comment that says why its default is what it is, compared with
what nginx and IIS (the server Exchange ActiveSync normally runs in) do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting is unusable (raised once, at start)."""


@dataclass(frozen=True, slots=True)
class Limits:
    # Request line + all header bytes. nginx accepts 1 KiB + 4 x 8 KiB buffers, IIS /
    # http.sys MaxRequestBytes is 16 KiB: EAS requests carry a handful of short headers,
    # 16 KiB leaves room for long Kerberos/NTLM Authorization headers and no more.
    max_header_bytes: int = 16 * 1024
    # IIS request filtering's maxQueryString default is 2048 bytes; the longest EAS query
    # (plain form, long ids and AttachmentName) stays well below it.
    max_query_bytes: int = 2048
    # IIS maxUrl default 4096.
    max_url_bytes: int = 4096
    # http.sys and nginx have no count limit (only bytes); 100 (h11, uvicorn) stops hash
    # flooding and pathological header lists long before the byte limit.
    max_header_count: int = 100
    # Request bodies are streamed, so this bounds upstream work, not our memory. Exchange
    # ships its ActiveSync vdir with request limits in the tens of MB (attachments in
    # SendMail / SmartForward); nginx defaults to 1 MiB which breaks attachments.
    max_body_bytes: int = 64 * 1024 * 1024
    # Concurrent connections from one client address per worker process (the forwarded
    # client address when the peer is a trusted proxy; 0: no cap), so one address cannot
    # take every connection slot. Generous because EAS clients share addresses: a
    # carrier's NAT or an office's Wi-Fi puts hundreds of phones, each holding a Ping,
    # behind one address (nginx has no such limit unless limit_conn is configured).
    max_connections_per_ip: int = 1000
    # Wrong device passwords (PW1) before further attempts for that user, or from that
    # device, are refused for the rest of the window without hashing (each scrypt
    # verification costs ~1 s of CPU). Per worker process. Five tries per five minutes
    # is the common lockout of a mobile device password (Exchange's own device password
    # policy wipes after 4-16).
    pw1_max_failures: int = 5
    pw1_failure_window_s: float = 300.0
    # Concurrent client connections per worker process. The open-files limit here is
    # 20,000 and a proxied request holds two descriptors (client + upstream), so one
    # process can hold at most ~9,900 requests; beyond the limit new connections are
    # closed at accept (nginx: worker_connections 512 by default, counting both legs).
    # Lowered at start if the process's open-files limit is smaller (state.connection_limit).
    max_connections: int = 9_500
    # A request answered locally (blocked, 404...) whose body is still arriving is read and
    # dropped up to this many bytes so the connection can be kept alive; beyond it the
    # connection is closed after the answer (nginx's lingering close does the same).
    max_discard_bytes: int = 1024 * 1024
    # Stream buffers: pause reading from one leg when the other leg's write buffer exceeds
    # this (asyncio's transport high-water mark), so a slow phone never makes us buffer an
    # attachment in memory.
    write_high_water: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    # Idle keep-alive between two requests on a client connection. nginx keepalive_timeout
    # is 75 s, IIS connectionTimeout 120 s; EAS clients reconnect cheaply.
    client_keepalive_s: float = 75.0
    # From the first byte of a request to the end of its headers, an absolute deadline
    # that more bytes do not extend (nginx client_header_timeout is 60 s between two
    # reads; http.sys HeaderWait 120 s). A device sends its whole head in one packet;
    # a client trickling bytes (slowloris) is cut with 408 after this.
    header_s: float = 30.0
    # No byte in either direction while an ordinary request is in flight (nginx
    # proxy_read_timeout 60 s, IIS connectionTimeout 120 s).
    request_idle_s: float = 120.0
    # Ping and long-poll Sync may hang up to 3540 s (MS-ASCMD): a reverse proxy with a
    # shorter read timeout is the classic cause of broken push mail. 65 minutes.
    long_poll_idle_s: float = 3900.0
    # Connect to the upstream (TCP + TLS); past it the device gets 503 + Retry-After.
    upstream_connect_s: float = 10.0
    # An idle pooled upstream connection is closed after this: below nginx's (75 s) and
    # IIS's (120 s) keep-alive so we almost never reuse a connection the upstream is
    # closing at the same moment.
    upstream_pool_idle_s: float = 30.0
    # Retry-After (seconds) sent with a 503 when the upstream is unreachable.
    retry_after_s: int = 30


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where allowed requests go. ``url`` is ``https://host[:port]`` (or ``http://`` when
    ``allow_plain_http``); the request path and query are kept as the device sent them."""

    url: str
    ca_bundle: Path | None = None  # None: the system trust store
    allow_plain_http: bool = False
    # The Host header sent upstream: the device's own (True, what a transparent reverse
    # proxy does and what Exchange expects when it builds URLs) or the upstream's.
    preserve_host: bool = True
    # TLS server name to verify (default: the URL's host).
    server_hostname: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def authority(self) -> str:
        """``host[:port]`` for a Host header (default ports omitted)."""
        parts = urlsplit(self.url)
        return parts.netloc.rsplit("@", 1)[-1]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    upstream: Upstream
    # The URL devices use to reach the gateway (scheme://host[:port]); a 451 redirect's
    # X-MS-Location is rewritten onto it (see headers.rewrite_ms_location).
    public_url: str
    # TLS certificate chain and key of the listener (PEM). Both None: plain HTTP, only
    # behind a TLS-terminating load balancer (the agent's config demands it explicitly).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (load balancers).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Hosts a 451's X-MS-Location may name unchanged (other sites' public gateways).
    redirect_allowed_hosts: frozenset[str] = frozenset()
    # The host names devices may address (the Host header, without port, lower-case);
    # anything else is answered 421. Empty: not checked.
    public_hosts: frozenset[str] = frozenset()
    # The node id stamped on access events.
    node_id: str = ""
    # The cluster's X25519 private key (base64, ``seg_contract.crypto``) that opens sealed
    # PW2s; None: substitution is unavailable on this node and affected users get 503.
    cluster_private_key: str | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Entries of the PW1 verification cache (per process).
    credential_cache_size: int = 10_000

    def __post_init__(self) -> None:
        problems = []
        up = urlsplit(self.upstream.url)
        if up.scheme not in ("https", "http") or not up.hostname:
            problems.append(f"upstream url {self.upstream.url!r} must be http(s)://host[:port]")
        elif up.scheme == "http" and not self.upstream.allow_plain_http:
            problems.append("plain http upstream needs allow_plain_http=True")
        if up.path not in ("", "/") or up.query:
            problems.append("upstream url must not carry a path or query")
        pub = urlsplit(self.public_url)
        if pub.scheme not in ("https", "http") or not pub.hostname:
            problems.append(f"public url {self.public_url!r} must be http(s)://host[:port]")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together")
        # The node's config insists on long_poll_idle_s >= 3540 s; tests use seconds.
        if min(self.timeouts.long_poll_idle_s, self.timeouts.request_idle_s) <= 0:
            problems.append("idle timeouts must be > 0")
        if self.timeouts.header_s <= 0:
            problems.append("the request head deadline must be > 0")
        limits = self.limits
        if limits.max_connections_per_ip < 0 or limits.pw1_max_failures < 1:
            problems.append("max_connections_per_ip must be >= 0 and pw1_max_failures >= 1")
        if limits.pw1_failure_window_s <= 0:
            problems.append("pw1_failure_window_s must be > 0")
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
