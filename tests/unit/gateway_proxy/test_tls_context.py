"""The listener's TLS context: TLS 1.2+ and the DirectSSLObject fast path, exercised
through a real handshake over memory BIOs (no sockets)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from onprem_gateway.proxy import ProxySettings, Upstream
from onprem_gateway.proxy.server import DirectSSLObject, server_ssl_context
from tests.support.certs import server_cert


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = server_cert(tmp_path, "gw", hosts=("localhost",))
    settings = ProxySettings(
        upstream=Upstream(url="https://exchange.corp"),
        public_url="https://mail.example.com",
        node_id="n1",
        tls_cert=cert,
        tls_key=key,
    )
    server = server_ssl_context(settings)
    assert server is not None
    return server, ssl.create_default_context(cafile=str(cert))


def test_context_is_tls12_plus_with_the_fast_object(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, _ = tls_pair
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.sslobject_class is DirectSSLObject
    assert server.options & ssl.OP_NO_COMPRESSION


def test_handshake_and_records_through_the_c_methods(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_pair
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    assert isinstance(server, DirectSSLObject)
    # The instance's methods are the C object's, not ssl.SSLObject's Python forwarders.
    assert not hasattr(server.read, "__func__")
    assert server.read.__self__ is server._sslobj  # type: ignore[attr-defined]
    for _ in range(6):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)
    assert server.version() in {"TLSv1.2", "TLSv1.3"}
    assert server.selected_alpn_protocol() is None  # the client offered none

    client.write(b"POST /Microsoft-Server-ActiveSync HTTP/1.1\r\n\r\n")
    _pump(c_out, s_in)
    assert server.pending() == 0
    assert server.read(262144) == b"POST /Microsoft-Server-ActiveSync HTTP/1.1\r\n\r\n"
    with pytest.raises(ssl.SSLWantReadError):
        server.read(262144)
    buf = bytearray(64)
    client.write(b"again")
    _pump(c_out, s_in)
    assert server.read(64, buf) == 5
    assert bytes(buf[:5]) == b"again"
    assert server.write(b"HTTP/1.1 200 OK\r\n\r\n") == 19
    _pump(s_out, c_in)
    assert client.read(1024) == b"HTTP/1.1 200 OK\r\n\r\n"
