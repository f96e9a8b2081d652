"""What one idle TLS connection costs before the gateway adds anything: the floor under
``held_pings.py``'s KiB per Ping.

Three measurements, each in a fresh server process on 127.0.0.1, ``--connections``
clients (another process) that complete the handshake, send one small request head
and stay open:

- ``uvloop plain``: a bare uvloop server (a protocol that keeps nothing), plain TCP;
- ``uvloop TLS``: the same with TLS (the gateway's server context: TLS 1.2+, ECDSA
  P-256, Python's ``ssl`` on the machine's OpenSSL), what every held TLS Ping pays
  before the gateway's own objects and its upstream connection;

and, in one process without sockets, ``OpenSSL state``: the bytes malloc reports in use
for ``--connections`` server-side ``SSLObject`` after the handshake and one read (memory
BIOs; the clients' objects freed), i.e. OpenSSL's own per-connection state.

Reproduce: .venv/bin/python bench/tls_memory_floor.py [--connections 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import resource
import ssl
import statistics
import sys
import time
from pathlib import Path

import trustme
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _summary import record

REQUEST = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=u&DeviceId=d&DeviceType=t HTTP/1.1\r\n"
    b"Host: seg.example.com\r\nContent-Length: 0\r\n\r\n"
)


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Keeper(asyncio.Protocol):
    """Keeps what a held request needs at the least: its transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass


def serve(tls: ssl.SSLContext | None, port_pipe: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Keeper, "127.0.0.1", 0, ssl=tls, backlog=4096)
        os.write(port_pipe, str(server.sockets[0].getsockname()[1]).encode().ljust(16))
        await asyncio.sleep(3600)

    uvloop.run(main())


async def hold(port: int, client: ssl.SSLContext | None, count: int) -> list[object]:
    held = []
    for _ in range(count):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost" if client else None
        )
        writer.write(REQUEST)
        held.append(writer)
    return held


def server_cost(tls: bool, count: int) -> float:
    """KiB of server RSS per held connection."""
    server_ctx, client_ctx = contexts()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the server
        try:
            serve(server_ctx if tls else None, w)
        finally:
            os._exit(0)
    try:
        port = int(os.read(r, 16))
        time.sleep(0.3)
        before = rss_of(pid)

        async def run() -> float:
            held = await hold(port, client_ctx if tls else None, count)
            await asyncio.sleep(1.0)
            after = rss_of(pid)
            for writer in held:
                writer.close()  # type: ignore[attr-defined]
            return (after - before) / count / 1024

        return asyncio.run(run())
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()
    ]


def malloc_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def openssl_state(count: int) -> float:
    """KiB malloc'd per server-side SSLObject after a handshake and one read."""
    server_ctx, client_ctx = contexts()

    def pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> None:
        data = source.read()
        if data:
            sink.write(data)

    kept, clients = [], []
    before = malloc_in_use()
    for _ in range(count):
        s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        for _ in range(6):
            for end in (client, server):
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            pump(c_out, s_in)
            pump(s_out, c_in)
        client.write(REQUEST)
        pump(c_out, s_in)
        server.read(4096)
        kept.append((server, s_in, s_out))
        clients.append((client, c_in, c_out))
    clients.clear()
    return (malloc_in_use() - before) / count / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.connections + 100:
        print(f"the open-files limit ({hard}) is below --connections", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: dict[str, list[float]] = {}
    cases = [("uvloop plain", False), ("uvloop TLS", True)]
    for round_ in range(args.rounds):
        order = cases if round_ % 2 == 0 else cases[::-1]
        for name, tls in order:
            runs.setdefault(name, []).append(server_cost(tls, args.connections))
        runs.setdefault("OpenSSL state", []).append(openssl_state(args.connections))
    print(
        f"\nKiB per idle connection ({args.connections:,} held, {args.rounds} rounds; "
        "median (min-max))"
    )
    for name, values in runs.items():
        print(f"{name:16} {statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})")
    print(f"OpenSSL: {ssl.OPENSSL_VERSION}")
    command = (
        ".venv/bin/python bench/tls_memory_floor.py "
        f"--connections {args.connections} --rounds {args.rounds}"
    )
    print(f"reproduce: {command}")
    for name, values in runs.items():
        figure = f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
        record("tls_memory_floor", f"KiB per idle connection, {name}", figure, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
