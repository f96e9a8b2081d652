"""In-process cost of the gateway's TLS layer, in CPU time (robust on a busy machine).

What the event loop's SSL layer (uvloop's ``SSLProtocol``) does per proxied request on
the device leg, replayed over memory BIOs with the gateway's own server context
(``onprem_gateway.proxy.server.server_ssl_context``): decrypt one 300-byte request
record (read until the BIOs are empty) and encrypt one 200-byte response; the client's
half is measured apart and subtracted. Compared: ``ssl.SSLObject`` (Python forwarding
methods) vs ``DirectSSLObject`` (the C methods bound on the instance), interleaved.

Also the server's CPU per full TLS handshake with an ECDSA P-256 and an RSA-2048
certificate, and per resumed TLS 1.3 handshake (session ticket), which decides what
reconnecting devices cost.

Reproduce: .venv/bin/python bench/tls_cost.py [--requests 20000] [--handshakes 200]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _summary import record as summary_row  # noqa: E402

from onprem_gateway.proxy import ProxySettings, Upstream  # noqa: E402
from onprem_gateway.proxy.server import DirectSSLObject, server_ssl_context  # noqa: E402
from tests.support.certs import KeyType, server_cert  # noqa: E402

REQUEST = b"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\n" + b"x" * 246
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 183\r\n\r\n" + b"y" * 160

Pair = tuple[
    ssl.SSLObject, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO
]


def make_cert(directory: Path, kind: str) -> tuple[Path, Path]:
    """A certificate for localhost from a throwaway CA (``trustme``), ECDSA P-256 or
    RSA-2048; the file holds the leaf and the CA, so clients trust it as their cafile."""
    key_type = KeyType.ECDSA if kind == "ecdsa" else KeyType.RSA
    return server_cert(directory, kind, hosts=("localhost",), key_type=key_type)


def gateway_context(cert: Path, key: Path) -> ssl.SSLContext:
    settings = ProxySettings(
        upstream=Upstream(url="https://exchange.corp"),
        public_url="https://mail.example.com",
        node_id="bench",
        tls_cert=cert,
        tls_key=key,
    )
    ctx = server_ssl_context(settings)
    assert ctx is not None
    return ctx


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> tuple[Pair, float]:
    """A full (or resumed) handshake over memory BIOs; returns the pair and the server's
    CPU seconds spent in it."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    spent = 0.0
    for _ in range(6):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        if data := c_out.read():
            s_in.write(data)
        t0 = time.process_time()
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        spent += time.process_time() - t0
        if data := s_out.read():
            c_in.write(data)
    try:  # take the TLS 1.3 session tickets
        client.read(1)
    except ssl.SSLWantReadError:
        pass
    return (server, client, s_in, s_out, c_in, c_out), spent


def server_side_cycles(pair: Pair, n: int) -> float:
    """CPU µs per request of the server's half: what SSLProtocol does per request."""
    server, client, s_in, s_out, _, c_out = pair
    records = []
    for _ in range(n):
        client.write(REQUEST)
        records.append(c_out.read())
    t0 = time.process_time()
    for record in records:
        s_in.write(record)
        while s_in.pending > 0 or server.pending() > 0:  # uvloop's _do_read__copied
            if not server.read(262144):
                break
        server.write(RESPONSE)
        s_out.read()
    return (time.process_time() - t0) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--handshakes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segtls-") as tmp:
        certs = {kind: make_cert(Path(tmp), kind) for kind in ("ecdsa", "rsa")}
        stock_ctx = gateway_context(*certs["ecdsa"])
        stock_ctx.sslobject_class = ssl.SSLObject
        direct_ctx = gateway_context(*certs["ecdsa"])
        client_ctx = ssl.create_default_context(cafile=str(certs["ecdsa"][0]))
        stock, _ = handshake(stock_ctx, client_ctx)
        direct, _ = handshake(direct_ctx, client_ctx)
        assert isinstance(direct[0], DirectSSLObject)
        runs: dict[str, list[float]] = {"stock": [], "direct": []}
        for _ in range(7):
            runs["stock"].append(server_side_cycles(stock, args.requests))
            runs["direct"].append(server_side_cycles(direct, args.requests))
        med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
        print(f"TLS record layer, server side, per request ({stock[0].version()}, ", end="")
        print(f"{stock[0].cipher()[0]}), median of 7 x {args.requests}:")  # type: ignore[index]
        print(f"  ssl.SSLObject    {med['stock']:6.2f} µs CPU")
        print(
            f"  DirectSSLObject  {med['direct']:6.2f} µs CPU  ({med['stock'] - med['direct']:+.2f})"
        )
        summary_row(
            "tls_cost",
            "TLS record work per small request (server CPU µs)",
            f"{med['direct']:.1f}",
            command=f".venv/bin/python bench/tls_cost.py --requests {args.requests}",
        )

        print(f"server CPU per TLS handshake (mean of {args.handshakes}):")
        for kind, (cert, key) in certs.items():
            ctx = gateway_context(cert, key)
            client = ssl.create_default_context(cafile=str(cert))
            full = sum(handshake(ctx, client)[1] for _ in range(args.handshakes))
            (_, first_client, *_), _ = handshake(ctx, client)
            session = first_client.session
            resumed = reused = 0.0
            for _ in range(args.handshakes):
                pair, spent = handshake(ctx, client, session)
                resumed += spent
                reused += pair[0].session_reused
            if kind == "ecdsa":
                summary_row(
                    "tls_cost",
                    "full TLS handshake, ECDSA P-256 (server CPU µs)",
                    f"{full / args.handshakes * 1e6:.0f}",
                    command=f".venv/bin/python bench/tls_cost.py --handshakes {args.handshakes}",
                )
            print(
                f"  {kind:5} certificate: full {full / args.handshakes * 1e6:5.0f} µs, "
                f"resumed {resumed / args.handshakes * 1e6:5.0f} µs "
                f"({reused:.0f}/{args.handshakes} resumed)"
            )
    print(
        "reproduce: .venv/bin/python bench/tls_cost.py "
        f"--requests {args.requests} --handshakes {args.handshakes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
