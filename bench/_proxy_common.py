"""Shared parts of the proxy benches (not a bench itself: run_all.sh skips files starting
with "_"): nginx as the upstream and as the reference proxy, wrk, the certificate, and
the *contenders* a bench compares in one run (nginx direct, nginx ``proxy_pass``, a real
gateway node), each started and stopped the same way and measured from /proc.

The upstream is nginx answering every request with ``_verify.UPSTREAM_BODY`` (1 worker),
with ``stub_status`` on a port of its own: how many requests it served is how many were
proxied, for the gateway and for nginx ``proxy_pass`` alike.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _node import (
    ROOT,
    GatewayNode,
    NodeOptions,
    children_of,
    cpu_seconds,
    rss_bytes,
    seg_gateway_command,
    stop_proc,
)
from _verify import UPSTREAM_BODY, round_order


def ensure_tools() -> None:
    """nginx and wrk from Debian; installed when missing (the benches' only side effect)."""
    missing = [
        t for t in ("nginx", "wrk") if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())
    ]
    if missing:
        print(f"installing {missing} (apt-get install -y nginx-light wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "nginx-light", "wrk"], check=True)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost / 127.0.0.1, made the way an operator makes
    one for development (``seg-gateway make-cert``: ECDSA P-256); nginx and the gateway
    use the same one."""
    cert, key = directory / "bench.crt", directory / "bench.key"
    cmd = [
        *seg_gateway_command(),
        "make-cert",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--days",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return cert, key


# --- nginx ---------------------------------------------------------------------------------


def start_nginx(
    workdir: Path, name: str, server_block: str, workers: int, connections: int = 10_000
) -> subprocess.Popen[bytes]:
    base = workdir / name
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o777)
    conf = base / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {workers};
pid {base}/nginx.pid;
error_log {base}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    keepalive_requests 1000000;
    {server_block}
}}
"""
    )
    return subprocess.Popen(
        [nginx_bin(), "-p", str(base), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _tls_lines(cert: Path, key: Path) -> str:
    return f"""
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;"""


class Upstream:
    """nginx answering ``UPSTREAM_BODY`` to everything (plain, and TLS on a second port
    for the generator's direct-TLS baseline), with ``stub_status`` to count requests."""

    def __init__(self, work: Path, tls: tuple[Path, Path] | None, workers: int = 1) -> None:
        self.port, self.status_port = free_port(), free_port()
        self.tls_port = free_port() if tls else 0
        body = UPSTREAM_BODY.decode()
        tls_listen = ""
        if tls:
            tls_listen = f"listen 127.0.0.1:{self.tls_port} reuseport backlog=4096 ssl;"
            tls_listen += _tls_lines(*tls)
        block = f"""
    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        {tls_listen}
        location / {{
            default_type application/vnd.ms-sync.wbxml;
            return 200 "{body}";
        }}
    }}
    server {{
        listen 127.0.0.1:{self.status_port};
        location = /status {{ stub_status; }}
    }}"""
        self.proc = start_nginx(work, "upstream", block, workers)
        wait_port(self.port)
        wait_port(self.status_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def served(self) -> int:
        """Requests the upstream served so far (not counting this status request)."""
        with socket.create_connection(("127.0.0.1", self.status_port), timeout=5) as s:
            s.sendall(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        m = re.search(rb"\n\s*\d+\s+\d+\s+(\d+)", data)
        if not m:
            raise RuntimeError(f"unexpected stub_status answer: {data!r}")
        return int(m.group(1)) - 1

    def stop(self) -> None:
        stop_proc(self.proc)


def proxy_block(port: int, upstream_port: int, tls: tuple[Path, Path] | None) -> str:
    """nginx ``proxy_pass`` with upstream keepalive (and TLS on its listener when given:
    the same certificate as the gateway's, TLS 1.2+, nginx's default ciphers)."""
    listen = f"listen 127.0.0.1:{port} reuseport backlog=4096{' ssl' if tls else ''};"
    return f"""
    upstream eas {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        {listen}{_tls_lines(*tls) if tls else ""}
        location / {{
            proxy_pass http://eas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 3900s;
        }}
    }}"""


# --- contenders ----------------------------------------------------------------------------


class Contender:
    """Something the load goes to: started, measured from /proc, stopped."""

    name = ""
    port = 0
    tls = False
    proxy = True  # False: the upstream itself (the load generator's baseline)
    node: GatewayNode | None = None

    def start(self) -> None: ...

    def pids(self) -> list[int]:
        return []

    def stop(self) -> None: ...

    def command(self) -> str:
        return ""


class Direct(Contender):
    def __init__(self, upstream: Upstream, tls: bool) -> None:
        self.name = "direct (nginx static)" + (" TLS" if tls else "")
        self.port = upstream.tls_port if tls else upstream.port
        self.tls = tls
        self.proxy = False
        self.upstream = upstream

    def pids(self) -> list[int]:
        return [self.upstream.proc.pid, *children_of(self.upstream.proc.pid)]


class NginxProxy(Contender):
    def __init__(
        self,
        work: Path,
        upstream: Upstream | str,
        workers: int,
        tls: tuple[Path, Path] | None,
        connections: int = 10_000,
    ) -> None:
        self.name = "nginx proxy_pass" + (" TLS" if tls else "")
        self.work, self.workers, self.cert = work, workers, tls
        self.upstream_port = (
            upstream.port if isinstance(upstream, Upstream) else int(upstream.rsplit(":", 1)[1])
        )
        self.connections = connections
        self.tls = tls is not None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_port()
        block = proxy_block(self.port, self.upstream_port, self.cert)
        name = "proxy" + ("-tls" if self.tls else "")
        self.proc = start_nginx(self.work, name, block, self.workers, self.connections)
        wait_port(self.port)

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children_of(self.proc.pid)]

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)


class Gateway(Contender):
    """A real node: ``seg-gateway run`` with its agent, workers and event reporter."""

    def __init__(
        self, work: Path, name: str, options: NodeOptions, policy_version: int = 1
    ) -> None:
        self.name = name
        self.work, self.options = work, options
        self.tls = options.tls is not None
        self.policy_version = policy_version

    def start(self) -> None:
        self.node = GatewayNode(self.work, "node-" + re.sub(r"\W+", "-", self.name), self.options)
        self.node.start(policy_version=self.policy_version)
        self.port = self.node.port

    def pids(self) -> list[int]:
        assert self.node is not None
        return self.node.pids

    def stop(self) -> None:
        if self.node is not None:
            code = self.node.stop()
            if code not in (0, None):
                print(f"  !! {self.name}: seg-gateway exited with {code} ({self.node.log_file})")

    def command(self) -> str:
        return self.node.describe() if self.node else ""


Row = dict[str, float]


def run_rounds(
    contenders: list[Contender],
    rounds: int,
    measure: Callable[[Contender], Row],
    after: Callable[[Contender, Row], None] | None = None,
) -> dict[str, list[Row]]:
    """Start, measure and stop every contender once per round, the order reversed every
    other round; ``after`` sees each row once its contender has stopped."""
    results: dict[str, list[Row]] = defaultdict(list)
    by_name = {c.name: c for c in contenders}
    try:
        for r in range(rounds):
            order = round_order(list(by_name), r)
            print(f"round {r + 1}/{rounds}: {', '.join(order)}", flush=True)
            for name in order:
                c = by_name[name]
                c.start()
                try:
                    row = measure(c)
                finally:
                    c.stop()
                if after is not None:
                    after(c, row)
                results[name].append(row)
    finally:
        for c in contenders:
            c.stop()
    return results


# --- wrk (closed loop) ---------------------------------------------------------------------


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return float("nan")
    number, unit = float(m.group(1)), m.group(2)
    return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def run_wrk(
    url: str, script: Path, *, duration: float, connections: int, threads: int = 2
) -> WrkResult:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def grab(pattern: str) -> str:
        m = re.search(pattern, out)
        if not m:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return m.group(1)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        requests=int(grab(r"(\d+) requests in")),
        p50_ms=_ms(grab(r"\s50%\s+(\S+)")),
        p99_ms=_ms(grab(r"\s99%\s+(\S+)")),
        non_2xx=int(errors.group(1)) if errors else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


def measure_cpu_rss(pids: list[int]) -> tuple[float, int]:
    return cpu_seconds(pids), rss_bytes(pids)
