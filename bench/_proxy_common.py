"""Shared helpers of the proxy bench scripts (not a bench itself: run_all.sh skips files
starting with "_"): nginx and wrk set-up, gateway worker processes, /proc accounting.

Gateway workers are started the way a node runs them (one process per worker, each
binding the same port with SO_REUSEPORT, uvloop), with an in-memory policy and an event
sink that does what the node's worker sink does (keep events, serialise a batch to JSON
every 200 ms), so the figures include the access-event cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import gc
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from onprem_gateway.core.policy_index import PolicyIndex  # noqa: E402
from onprem_gateway.proxy import ProxySettings, Upstream, start_eas_server  # noqa: E402
from seg_contract import (  # noqa: E402
    Access,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicySnapshot,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNC_PATH = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=dev1&DeviceType=iPhone"
PING_PATH = "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=dev1&DeviceType=iPhone"
BODY_300 = b"\x03\x01j\x00\x00\x00E\\OK\x03" + b"x" * 288
# Basic alice:password: the gateway decides on the user the mail server authenticates.
ALICE = "Basic YWxpY2U6cGFzc3dvcmQ="


def ensure_tools() -> None:
    """nginx and wrk from Debian; installed when missing (the bench's only side effect)."""
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


def start_nginx(
    workdir: Path, name: str, server_block: str, workers: int
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
events {{ worker_connections 10000; }}
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


def static_upstream_block(port: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            default_type application/vnd.ms-sync.wbxml;
            return 200 "sync-ok-0123456789abcdef0123456789abcdef";
        }}
    }}"""


def proxy_block(port: int, upstream_port: int) -> str:
    return f"""
    upstream eas {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://eas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 3900s;
        }}
    }}"""


def tls_proxy_block(port: int, upstream_port: int, cert: Path, key: Path) -> str:
    """``proxy_block`` with TLS termination on the listener (the gateway's TLS peer):
    same certificate, TLS 1.2+ only, nginx's default ciphers (``HIGH:!aNULL:!MD5``)."""
    return proxy_block(port, upstream_port).replace(
        "reuseport backlog=4096;",
        f"""reuseport backlog=4096 ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;""",
        1,
    )


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append(int(entry))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    return total / CLK_TCK


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the processes."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


# --- wrk -----------------------------------------------------------------------------------

WRK_LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 300)
wrk.headers["Content-Type"] = "application/vnd.ms-sync.wbxml"
wrk.headers["MS-ASProtocolVersion"] = "14.1"
wrk.headers["User-Agent"] = "Apple-iPhone/1801"
wrk.headers["Authorization"] = "Basic YWxpY2U6cGFzc3dvcmQ="
"""


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return float("nan")
    number, unit = float(m.group(1)), m.group(2)
    return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number


def run_wrk(
    url: str, workdir: Path, *, duration: int, connections: int, threads: int = 2
) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(WRK_LUA)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": total,
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock_err.group(1) if sock_err else "",  # type: ignore[dict-item]
    }


# --- gateway workers -----------------------------------------------------------------------


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 / localhost (bench only)."""
    import ipaddress  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "bench.crt", directory / "bench.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def start_gateway_workers(
    port: int,
    upstream_port: int,
    workers: int,
    *,
    profile_dir: Path | None = None,
    tls: tuple[Path, Path] | None = None,
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for index in range(workers):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--port",
            str(port),
            "--upstream-port",
            str(upstream_port),
        ]
        if profile_dir is not None:
            cmd += ["--profile", str(profile_dir / f"worker{index}.prof")]
        if tls is not None:
            cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE))
    for proc in procs:
        line = proc.stdout.readline() if proc.stdout else b""
        if not line.startswith(b"ready"):
            raise RuntimeError("a gateway worker did not start")
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


class BatchingSink:
    """Like the node's worker sink: keep events, serialise them in batches every 200 ms."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.sent = 0

    def record(self, event: object) -> None:
        self.events.append(event)

    async def pump(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            batch, self.events = self.events, []
            if batch:
                payload = [e.model_dump(mode="json") for e in batch]  # type: ignore[attr-defined]
                self.sent += len(payload)


def bench_policy() -> PolicyIndex:

    now = dt.datetime.now(dt.UTC)
    devices = [
        DeviceEntry(
            user=f"user{i}",
            device_id=f"dev{i}",
            access=Access.ALLOW,
            reason="compliant",
            source=EntrySource.COMPLIANCE,
            version=1,
            updated_at=now,
        )
        for i in range(10_000)
    ]
    devices.append(
        DeviceEntry(
            user="alice",
            device_id="dev1",
            access=Access.ALLOW,
            reason="compliant",
            source=EntrySource.COMPLIANCE,
            version=1,
            updated_at=now,
        )
    )
    snap = PolicySnapshot(
        cluster_id="bench",
        version=1,
        generated_at=now,
        settings=ClusterSettings(),
        devices=tuple(devices),
    )
    return PolicyIndex.from_snapshot(snap, confirmed_at=time.time())


async def _serve(port: int, upstream_port: int, tls: tuple[str, str] | None = None) -> None:

    index = bench_policy()

    class View:
        def current(self):  # type: ignore[no-untyped-def]
            return index

    if os.environ.get("SEG_BENCH_STOCK_SSLOBJECT"):  # A/B of the DirectSSLObject fast path
        import onprem_gateway.proxy.server as server_module  # noqa: PLC0415

        server_module.DirectSSLObject = ssl.SSLObject  # type: ignore[misc,assignment]
    sink = BatchingSink()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    settings = ProxySettings(
        upstream=Upstream(url=f"http://127.0.0.1:{upstream_port}", allow_plain_http=True),
        public_url=f"http://127.0.0.1:{port}",
        node_id="bench",
        tls_cert=Path(tls[0]) if tls else None,
        tls_key=Path(tls[1]) if tls else None,
    )
    server = await start_eas_server(
        settings, View(), sink, sock=sock, tune_gc=not os.environ.get("SEG_BENCH_NO_GC_TUNING")
    )
    pump = asyncio.get_running_loop().create_task(sink.pump())
    stop_event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
    if os.environ.get("SEG_BENCH_TRIM"):
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL("libc.so.6")
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, lambda: libc.malloc_trim(0))
    gc_times: list[tuple[int, float]] = []
    if os.environ.get("SEG_BENCH_GC_STATS"):
        started: list[float] = []

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                gc_times.append((info["generation"], time.perf_counter() - started.pop()))

        gc.callbacks.append(on_gc)
    print("ready", flush=True)
    await stop_event.wait()
    pump.cancel()
    await server.close(1.0)
    if gc_times:
        for gen in (0, 1, 2):
            durs = [d for g, d in gc_times if g == gen]
            if durs:
                print(
                    f"gc gen{gen}: {len(durs)} runs, max {max(durs) * 1000:.1f} ms, "
                    f"total {sum(durs) * 1000:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--profile")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    if args.profile:
        prof = cProfile.Profile(time.process_time)  # CPU time: robust on a busy machine
        prof.enable()
        uvloop.run(_serve(args.port, args.upstream_port, tls))
        prof.disable()
        prof.dump_stats(args.profile)
    else:
        uvloop.run(_serve(args.port, args.upstream_port, tls))


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
