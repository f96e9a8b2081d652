"""Answers the gateway gives itself (not the upstream's): errors, blocks, 100-continue.

Bodies are short plain-text reasons for a human reading a client log; they never echo
credentials or mail content.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TEXT_PLAIN = b"text/plain; charset=utf-8"


def reason_phrase(status: int) -> bytes:
    phrase = _PHRASES.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b"Status"
        _PHRASES[status] = phrase
    return phrase


# EAS's own meanings first (MS-ASHTTP 3.1.5.2): 451 is Exchange's redirect, not RFC
# 7725's "Unavailable For Legal Reasons".
_PHRASES = {
    449: b"Retry After Sending Provisioning Information",
    451: b"Redirect",
    456: b"Blocked",
    457: b"Password Expired",
}


def http_date(now: float) -> bytes:
    return formatdate(now, usegmt=True).encode("ascii")


def local_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes | None = TEXT_PLAIN,
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
    date: bytes = b"",
) -> bytes:
    """A complete response (head and body) as bytes."""
    parts = [b"HTTP/1.1 ", str(status).encode("ascii"), b" ", reason_phrase(status), b"\r\n"]
    if date:
        parts += (b"Date: ", date, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if body and content_type:
        parts += (b"Content-Type: ", content_type, b"\r\n")
    parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def text(reason: str) -> bytes:
    """A reason as a one-line body, bounded (it may quote a fragment of the request)."""
    return reason[:300].encode("utf-8", "replace") + b"\n"
