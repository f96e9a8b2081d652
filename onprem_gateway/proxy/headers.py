"""Pure header handling for the proxy: what crosses each leg, what is added, what is
rewritten. Header lists are ``[(lower_name, name, value), ...]`` of bytes as parsed: the
name is lower-cased once, when parsed, and kept in its original case for forwarding
(HTTP field names are case-insensitive, but some servers and clients are not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from onprem_gateway.proxy.settings import IPNetwork

Header = tuple[bytes, bytes, bytes]  # (lower-cased name, name as sent, value)

# RFC 9110 7.6.1: connection-specific fields, never forwarded. Proxy-* (Proxy-Connection,
# Proxy-Authorization, Proxy-Authenticate) are for this hop only as well.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Set by the gateway itself on the upstream request: framing (we re-frame the body),
# Expect (the gateway answers 100-continue to the device itself), the forwarding headers
# (rebuilt from what we saw).
_REQUEST_OWN = frozenset(
    {b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"host"}
)
_RESPONSE_OWN = frozenset({b"content-length"})
_REQUEST_DROP = HOP_BY_HOP | _REQUEST_OWN
_RESPONSE_DROP = HOP_BY_HOP | _RESPONSE_OWN
# Claims about the client's address or the original request that only a trusted proxy
# may make (RFC 7239 Forwarded, the de-facto X-Forwarded-*, X-Real-IP): from anyone
# else they are forgeries the mail server might log or believe, so they are dropped.
_FORWARDING = frozenset({b"forwarded", b"x-real-ip"})
_X_FORWARDED = b"x-forwarded-"


_NO_TOKENS: frozenset[bytes] = frozenset()


def connection_tokens(headers: Iterable[Header]) -> frozenset[bytes]:
    """Field names listed in Connection headers (RFC 9110 7.6.1), lower-cased."""
    tokens: set[bytes] = set()
    for lname, _, value in headers:
        if lname == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens) if tokens else _NO_TOKENS


def forwarded_for(
    client_ip: str, headers: Sequence[Header], trusted: Sequence[IPNetwork], tls: bool
) -> tuple[bytes, bytes]:
    """The X-Forwarded-For and X-Forwarded-Proto values to send upstream.

    A device's own X-Forwarded-For is a claim anyone can forge, so it is kept only when
    the peer is a configured trusted proxy (a load balancer); otherwise the chain starts
    at the peer.
    """
    peer_trusted = is_trusted(client_ip, trusted)
    prior_for: list[bytes] = []
    proto = b"https" if tls else b"http"
    if peer_trusted:
        for lname, _, value in headers:
            if lname == b"x-forwarded-for":
                prior_for.append(value.strip())
            elif lname == b"x-forwarded-proto" and value.strip().lower() in (b"http", b"https"):
                proto = value.strip().lower()
    prior_for.append(client_ip.encode("ascii"))
    return b", ".join(prior_for), proto


def forwarded_client(
    client_ip: str, headers: Sequence[Header], trusted: Sequence[IPNetwork]
) -> str:
    """The address of the client behind a chain of trusted proxies: the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries further left were
    written by whoever the client is, so they prove nothing). The peer's own address
    when the peer is not trusted or names no one."""
    if not is_trusted(client_ip, trusted):
        return client_ip
    hops: list[str] = []
    for lname, _, value in headers:
        if lname == b"x-forwarded-for":
            hops.extend(h.strip() for h in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client_ip  # a malformed chain: count the proxy itself
        if not is_trusted(hop, trusted):
            return hop
    return client_ip


def asks_for_connection_auth(headers: Iterable[Header]) -> bool:
    """Whether a 401's WWW-Authenticate offers NTLM or Negotiate (HAProxy's test: a
    value starting with "NTLM" or "Nego"), i.e. the server is about to authenticate the
    connection rather than the request."""
    for lname, _, value in headers:
        if lname == b"www-authenticate":
            head = value.lstrip()[:4].lower()
            if head in (b"ntlm", b"nego"):
                return True
    return False


def is_trusted(client_ip: str, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted or not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in net for net in trusted)


def upstream_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[Header],
    *,
    host: bytes,
    x_forwarded_for: bytes,
    x_forwarded_proto: bytes,
    content_length: int | None,
    chunked: bool,
    authorization: bytes | None = None,
    has_connection: bool = True,
    strip_forwarding: bool = True,
) -> bytes:
    """The request head sent upstream (always HTTP/1.1, keep-alive).

    ``content_length`` / ``chunked`` describe how the gateway frames the body it
    forwards; ``authorization`` replaces the device's Authorization (credential
    substitution) when given. ``has_connection`` False: the caller knows there is no
    Connection header (saves a pass). ``strip_forwarding``: drop Forwarded, X-Real-IP
    and X-Forwarded-* (the peer is not a trusted proxy).
    """
    extra = connection_tokens(headers) if has_connection else _NO_TOKENS
    parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for lname, name, value in headers:
        # Inlined (runs for every header of every request).
        if lname in _REQUEST_DROP or lname.startswith(b"proxy-") or (extra and lname in extra):
            continue
        if strip_forwarding and (lname in _FORWARDING or lname.startswith(_X_FORWARDED)):
            continue
        if authorization is not None and lname == b"authorization":
            continue
        parts += (name, b": ", value, b"\r\n")
    if authorization is not None:
        parts += (b"Authorization: ", authorization, b"\r\n")
    parts += (b"X-Forwarded-For: ", x_forwarded_for, b"\r\nX-Forwarded-Proto: ")
    parts += (x_forwarded_proto, b"\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        parts += (b"Content-Length: ", str(content_length).encode("ascii"), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def client_response_head(
    status: int,
    reason: bytes,
    headers: Sequence[Header],
    *,
    content_length: int | None,
    chunked: bool,
    keep_alive: bool,
    ms_location: bytes | None = None,
    has_connection: bool = True,
) -> bytes:
    """The response head sent to the device. ``ms_location`` replaces a 451's
    X-MS-Location (see ``rewrite_ms_location``)."""
    extra = connection_tokens(headers) if has_connection else _NO_TOKENS
    parts = [b"HTTP/1.1 ", str(status).encode("ascii"), b" ", reason, b"\r\n"]
    for lname, name, value in headers:
        if lname in _RESPONSE_DROP or lname.startswith(b"proxy-") or (extra and lname in extra):
            continue
        if ms_location is not None and lname == b"x-ms-location":
            parts += (name, b": ", ms_location, b"\r\n")
        else:
            parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        parts += (b"Content-Length: ", str(content_length).encode("ascii"), b"\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def rewrite_ms_location(location: bytes, public_url: str, allowed_hosts: frozenset[str]) -> bytes:
    """Where a 451 redirect may send the device.

    MS-ASHTTP 3.1.5.2.2: after a 451 the client SHOULD send all later requests to the
    URL in X-MS-Location. Exchange names its own (often internal) host there; passing it
    on would leak the internal name and send the phone around the gateway, where it
    cannot connect (and would escape enforcement if it could). Following the redirect
    inside the gateway would pin the gateway to one mailbox site per request. We rewrite:
    the location keeps its path and query but takes the gateway's public scheme and
    host, so the device stays on the gateway; hosts listed in ``allowed_hosts`` (the
    public gateways of other sites) pass unchanged. A location that is not an absolute
    http(s) URL becomes the public URL plus the EAS path.
    """
    try:
        parts = urlsplit(location.decode("latin-1").strip())
    except ValueError:
        parts = urlsplit("")
    if parts.hostname and parts.hostname.lower() in allowed_hosts:
        return location
    public = urlsplit(public_url)
    path = parts.path if parts.scheme in ("http", "https") and parts.path else ""
    path = path or "/Microsoft-Server-ActiveSync"
    query = f"?{parts.query}" if parts.query else ""
    return f"{public.scheme}://{public.netloc}{path}{query}".encode("latin-1")
