"""Read an ``Authorization`` header the way the mail server will (RFC 9110 11.6.2).

``read_authorization(value)`` says which scheme the device presents and what it names,
without verifying anything (``identity.py`` decides what to do with it):

- **Basic** (RFC 7617): exactly ``Basic`` (any case), one space, and the standard
  base64 alphabet with its padding, decoding to ``user:password``. This is the form
  every EAS client sends and the form IIS reads (it splits at the first colon). What IIS
  may also tolerate (several spaces, a tab, missing padding, a line break inside) is
  refused: the gateway cannot prove IIS would read the same user from it. The user
  name must be ASCII: IIS decodes Basic credentials with the server's ANSI code page,
  modern clients encode UTF-8, so a non-ASCII name may be a different account to IIS
  than to us. The password is kept as bytes and never decoded here.
- **NTLM** / **Negotiate**: one space and base64 of an NTLM message (``ntlm.py``);
  Negotiate may carry SPNEGO with NTLM or Kerberos inside.
- **Bearer** (RFC 6750): one space and a token68 (a JWT is base64url parts joined by
  dots); verified by ``bearer.py``.
- Any other scheme is reported as such (``Scheme.OTHER``).

A value whose scheme *starts like* a known one but is not exactly it (``Basicx``,
``Basic<TAB>...``, ``NTLMSSP ...``) is malformed, never "another scheme": a device
must not be able to step around Basic by spelling it oddly.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from enum import StrEnum

from onprem_gateway.core.ntlm import (
    NegotiateToken,
    NtlmError,
    NtlmMessage,
    read_negotiate,
    read_ntlm,
)

# Authorization: "Basic " + base64 of "DOMAIN\\user:password" fits in 1 KiB; an NTLM
# AUTHENTICATE with NTLMv2 responses, and a JWT with group claims, are several KiB.
# The request head limit (16 KiB) bounds all of them.
MAX_BASIC = 1024
MAX_USER = 256

_SEPARATOR = re.compile(r"[ \t,]")
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
# RFC 9110 token68: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "="s.
_TOKEN68 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


class Scheme(StrEnum):
    BASIC = "Basic"
    NTLM = "NTLM"
    NEGOTIATE = "Negotiate"
    BEARER = "Bearer"
    OTHER = "other"


_KNOWN = {s.value.lower(): s for s in (Scheme.BASIC, Scheme.NTLM, Scheme.NEGOTIATE, Scheme.BEARER)}


class AuthorizationError(ValueError):
    """An Authorization header that claims a scheme but breaks its syntax. ``reason`` is
    safe to send back (it never echoes the credentials); ``scheme`` is the one claimed."""

    def __init__(self, scheme: Scheme, reason: str) -> None:
        super().__init__(reason)
        self.scheme = scheme
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Presented:
    """What one Authorization header presents.

    ``user`` is the account as presented (Basic's user, NTLM's ``DOMAIN\\user``), ""
    when the scheme names none (an NTLM NEGOTIATE, Kerberos, Bearer before it is
    verified). ``ntlm`` is the NTLM message (NTLM, or Negotiate with NTLM inside).
    ``secret`` is Basic's password or the Bearer token: never logged, never in a repr.
    """

    scheme: Scheme
    user: str = ""
    ntlm: NtlmMessage | None = None
    mechanism: str = ""  # Negotiate: "ntlm", "kerberos" or "unknown"
    secret: bytes = field(default=b"", repr=False)
    other_scheme: str = ""  # Scheme.OTHER: the name, for logs and events

    @property
    def connection_bound(self) -> bool:
        """NTLM and Negotiate authenticate the TCP connection, not the request."""
        return self.scheme in (Scheme.NTLM, Scheme.NEGOTIATE)

    @property
    def handshake(self) -> bool:
        """An NTLM NEGOTIATE leg: it starts a handshake and names no one."""
        return self.ntlm is not None and self.ntlm.message_type == 1

    @property
    def password(self) -> bytes:
        return self.secret if self.scheme is Scheme.BASIC else b""

    @property
    def token(self) -> str:
        return self.secret.decode("ascii") if self.scheme is Scheme.BEARER else ""


# One return per scheme, in the order the module docstring lists them.
def read_authorization(value: str | None) -> Presented | None:  # noqa: PLR0911
    """The credentials in an ``Authorization`` value (None: no header). Raises
    ``AuthorizationError`` for a malformed value of a known scheme."""
    if value is None:
        return None
    name, sep, rest = _split_scheme(value)
    lowered = name.lower()
    scheme = _KNOWN.get(lowered)
    if scheme is None:
        claimed = next((s for k, s in _KNOWN.items() if lowered.startswith(k)), None)
        if claimed is not None:
            raise AuthorizationError(claimed, f"the scheme is not exactly {claimed.value}")
        if not name:
            raise AuthorizationError(Scheme.OTHER, "Authorization header without a scheme")
        return Presented(Scheme.OTHER, other_scheme=name[:32])
    if sep != " " or not rest:
        raise AuthorizationError(
            scheme, f"{scheme.value} must be followed by one space and its credentials"
        )
    if scheme is Scheme.BASIC:
        return _basic(rest)
    if scheme is Scheme.BEARER:
        if not _TOKEN68.issuperset(rest) or "=" in rest.rstrip("="):
            raise AuthorizationError(scheme, "Bearer token is not a token68")
        return Presented(scheme, secret=rest.encode("ascii"))
    blob = _b64(rest, scheme)
    try:
        if scheme is Scheme.NTLM:
            return Presented(scheme, *_ntlm_user(read_ntlm(blob)), mechanism="ntlm")
        token: NegotiateToken = read_negotiate(blob)
    except NtlmError as exc:
        raise AuthorizationError(scheme, exc.reason) from None
    if token.ntlm is None:
        return Presented(scheme, mechanism=token.mechanism)
    user, ntlm = _ntlm_user(token.ntlm)
    return Presented(scheme, user, ntlm, mechanism="ntlm")


def basic_credentials(value: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic header (the password decoded as UTF-8), None for
    no header or another scheme. Raises ``AuthorizationError`` when Basic is malformed
    or its password is not UTF-8."""
    presented = read_authorization(value)
    if presented is None or presented.scheme is not Scheme.BASIC:
        return None
    try:
        return presented.user, presented.password.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthorizationError(Scheme.BASIC, "Basic password is not UTF-8") from None


def _split_scheme(value: str) -> tuple[str, str, str]:
    """(scheme, the one separator character after it or "", the rest)."""
    match = _SEPARATOR.search(value)
    if match is None:
        return value, "", ""
    at = match.start()
    return value[:at], value[at], value[at + 1 :]


def _b64(text: str, scheme: Scheme) -> bytes:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise AuthorizationError(scheme, f"{scheme.value} credentials are not base64") from None
    try:
        # strict: the standard alphabet only (no whitespace, no base64url), padded.
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        if not _BASE64.issuperset(raw):
            raise AuthorizationError(scheme, f"{scheme.value} credentials are not base64") from None
        raise AuthorizationError(
            scheme, f"{scheme.value} credentials are not padded base64"
        ) from None


def _basic(rest: str) -> Presented:
    if len(rest) > MAX_BASIC:
        raise AuthorizationError(Scheme.BASIC, f"Basic credentials longer than {MAX_BASIC}")
    decoded = _b64(rest, Scheme.BASIC)
    raw_user, sep, password = decoded.partition(b":")
    if not sep:
        raise AuthorizationError(Scheme.BASIC, "Basic credentials have no ':' after the user")
    if not raw_user.isascii():
        raise AuthorizationError(
            Scheme.BASIC,
            "Basic user name is not ASCII (the mail server may read it in another code "
            "page); use the ASCII account name or UPN",
        )
    user = raw_user.decode("ascii")
    if not user.strip():
        raise AuthorizationError(Scheme.BASIC, "Basic user name is empty")
    if len(user) > MAX_USER or not user.isprintable():
        raise AuthorizationError(
            Scheme.BASIC, "Basic user name is too long or contains control characters"
        )
    return Presented(Scheme.BASIC, user, secret=password)


def _ntlm_user(message: NtlmMessage) -> tuple[str, NtlmMessage]:
    return message.account, message
