"""Pure header handling of the proxy: hop-by-hop removal, forwarding headers, 451."""

from __future__ import annotations

import ipaddress

import pytest

from onprem_gateway.proxy import headers

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def triples(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    return [(n.lower(), n, v) for n, v in pairs]


def test_hop_by_hop_and_connection_named_headers_are_not_forwarded() -> None:
    given = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Sum"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"3"),
        (b"Expect", b"100-continue"),
        (b"Host", b"device.example"),
        (b"MS-ASProtocolVersion", b"14.1"),
        (b"Authorization", b"Basic YTpi"),
    ]
    head = headers.upstream_request_head(
        b"POST",
        b"/Microsoft-Server-ActiveSync?Cmd=Sync",
        triples(given),
        host=b"device.example",
        x_forwarded_for=b"192.0.2.1",
        x_forwarded_proto=b"https",
        content_length=3,
        chunked=False,
    )
    assert head == (
        b"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\n"
        b"Host: device.example\r\n"
        b"MS-ASProtocolVersion: 14.1\r\n"
        b"Authorization: Basic YTpi\r\n"
        b"X-Forwarded-For: 192.0.2.1\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"Content-Length: 3\r\n\r\n"
    )


def test_substituted_authorization_replaces_the_devices_own() -> None:
    head = headers.upstream_request_head(
        b"POST",
        b"/x",
        triples([(b"authorization", b"Basic old"), (b"User-Agent", b"ua")]),
        host=b"h",
        x_forwarded_for=b"1.2.3.4",
        x_forwarded_proto=b"https",
        content_length=None,
        chunked=True,
        authorization=b"Basic new",
    )
    assert b"Basic old" not in head
    assert b"Authorization: Basic new\r\n" in head
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")


def test_response_head_drops_hop_by_hop_and_sets_framing() -> None:
    head = headers.client_response_head(
        200,
        b"OK",
        triples(
            [
                (b"Connection", b"close, X-Internal"),
                (b"X-Internal", b"secret"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Content-Type", b"application/vnd.ms-sync.wbxml"),
                (b"MS-Server-ActiveSync", b"15.1"),
            ]
        ),
        content_length=None,
        chunked=True,
        keep_alive=False,
    )
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/vnd.ms-sync.wbxml\r\n"
        b"MS-Server-ActiveSync: 15.1\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("peer", "given", "expected_for", "expected_proto"),
    [
        # Untrusted peer: its claims are dropped, the chain starts at the peer.
        ("198.51.100.7", [(b"X-Forwarded-For", b"6.6.6.6")], b"198.51.100.7", b"https"),
        # Trusted load balancer: the chain is extended, its proto believed.
        (
            "10.1.2.3",
            [(b"X-Forwarded-For", b"203.0.113.5"), (b"X-Forwarded-Proto", b"http")],
            b"203.0.113.5, 10.1.2.3",
            b"http",
        ),
        ("10.1.2.3", [], b"10.1.2.3", b"https"),
        ("10.1.2.3", [(b"X-Forwarded-Proto", b"gopher")], b"10.1.2.3", b"https"),
    ],
)
def test_forwarded_for_trusts_only_configured_proxies(
    peer: str, given: list[tuple[bytes, bytes]], expected_for: bytes, expected_proto: bytes
) -> None:
    assert headers.forwarded_for(peer, triples(given), TRUSTED, tls=True) == (
        expected_for,
        expected_proto,
    )


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            b"https://mail01.corp.internal/Microsoft-Server-ActiveSync",
            b"https://seg.example.com/Microsoft-Server-ActiveSync",
        ),
        (
            b"https://mail01.corp.internal:444/Microsoft-Server-ActiveSync?x=1",
            b"https://seg.example.com/Microsoft-Server-ActiveSync?x=1",
        ),
        (b"not a url", b"https://seg.example.com/Microsoft-Server-ActiveSync"),
        (b"", b"https://seg.example.com/Microsoft-Server-ActiveSync"),
        # Another site's public gateway, explicitly allowed: unchanged.
        (
            b"https://seg-emea.example.com/Microsoft-Server-ActiveSync",
            b"https://seg-emea.example.com/Microsoft-Server-ActiveSync",
        ),
    ],
)
def test_451_location_never_leaks_an_internal_host(location: bytes, expected: bytes) -> None:
    assert (
        headers.rewrite_ms_location(
            location, "https://seg.example.com", frozenset({"seg-emea.example.com"})
        )
        == expected
    )


def test_connection_tokens_are_case_insensitive() -> None:
    assert headers.connection_tokens(
        triples([(b"CONNECTION", b"Keep-Alive , X-A,,")])
    ) == frozenset({b"keep-alive", b"x-a"})
