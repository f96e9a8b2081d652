"""Read the user out of NTLM messages, bare (``Authorization: NTLM``) or inside SPNEGO
(``Authorization: Negotiate``), without any secret.

NTLM (MS-NLMP) authenticates a TCP connection in three legs: the client's NEGOTIATE
message (type 1), the server's CHALLENGE (type 2, in a 401), the client's AUTHENTICATE
(type 3). The AUTHENTICATE message names the account in clear (MS-NLMP 2.2.1.3):
``DomainName`` and ``UserName`` are security buffers (length, maximum length, offset
into the message, MS-NLMP 2.2.2.10), UTF-16LE when the message's NegotiateFlags carry
NTLMSSP_NEGOTIATE_UNICODE, else the client's OEM code page. The server verifies the
response against exactly that account, so the user read here is the user the mail
server authenticates once it accepts the message.

Negotiate (RFC 4559) carries SPNEGO (RFC 4178), which wraps Kerberos or NTLM. Only the
NTLM case names its user in clear; ``read_negotiate`` unwraps just enough DER to find
an NTLM message in the mechanism token (NegTokenInit, whose first mechanism must be
NTLMSSP) or the response token (NegTokenResp). A Kerberos token is reported as such:
its client name is inside an encrypted authenticator.

Why hand-written: no maintained library offers a public API that parses these messages
(pyspnego's parsers are private modules); the formats are fixed-layout and small, and
every offset is checked against the message length.
"""

from __future__ import annotations

from dataclasses import dataclass

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE, CHALLENGE, AUTHENTICATE = 1, 2, 3
# MS-NLMP 2.2.2.5 NegotiateFlags.
NEGOTIATE_UNICODE = 0x00000001  # flag A
NEGOTIATE_ANONYMOUS = 0x00000800  # flag J
# AUTHENTICATE_MESSAGE fixed fields (MS-NLMP 2.2.1.3): Signature, MessageType, six
# security buffers of 8 bytes (LmChallengeResponse, NtChallengeResponse, DomainName,
# UserName, Workstation, EncryptedRandomSessionKey), NegotiateFlags.
_AUTH_FIXED = 64
_DOMAIN_AT, _USER_AT, _FLAGS_AT = 28, 36, 60
_NT_RESPONSE_AT = 20
_UNUSED_BUFFERS = (
    (12, "LmChallengeResponse"),
    (_NT_RESPONSE_AT, "NtChallengeResponse"),
    (44, "Workstation"),
    (52, "EncryptedRandomSessionKey"),
)
# NEGOTIATE_MESSAGE: Signature, MessageType, NegotiateFlags at least (MS-NLMP 2.2.1.1).
_NEGOTIATE_MIN = 16
# The longest NTLM message a client sends is a few KiB (AV pairs, MIC); anything longer
# is not NTLM. The header limit bounds it anyway.
MAX_MESSAGE = 8192
# Account and domain names (sAMAccountName 20, UPN and NetBIOS/DNS domains longer).
_MAX_NAME = 256

# DER: RFC 4178 SPNEGO and the OIDs that matter.
_OID_NTLMSSP = bytes.fromhex("2b06010401823702020a")  # 1.3.6.1.4.1.311.2.2.10
_OID_SPNEGO = bytes.fromhex("2b0601050502")  # 1.3.6.1.5.5.2


class NtlmError(ValueError):
    """Not a well-formed NTLM (or SPNEGO) message; ``reason`` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NtlmMessage:
    """A client's NTLM message. For AUTHENTICATE: the account as the client wrote it
    (``domain`` may be empty, ``user`` may be ``user@domain``); ``anonymous`` for a null
    session (no user), which authenticates nobody."""

    message_type: int
    user: str = ""
    domain: str = ""

    @property
    def account(self) -> str:
        """``DOMAIN\\user`` or ``user`` (what ``seg_contract.normalize_user`` reads)."""
        return f"{self.domain}\\{self.user}" if self.domain else self.user

    @property
    def anonymous(self) -> bool:
        return self.message_type == AUTHENTICATE and not self.user


@dataclass(frozen=True, slots=True)
class NegotiateToken:
    """What a Negotiate token holds: an NTLM message, or something else (Kerberos)."""

    ntlm: NtlmMessage | None
    mechanism: str  # "ntlm", "kerberos" or "unknown"


def read_ntlm(blob: bytes) -> NtlmMessage:
    """The NEGOTIATE or AUTHENTICATE message in ``blob`` (a CHALLENGE comes from servers
    only and is refused)."""
    if len(blob) > MAX_MESSAGE:
        raise NtlmError(f"NTLM message longer than {MAX_MESSAGE} bytes")
    if len(blob) < 12 or blob[:8] != SIGNATURE:
        raise NtlmError("not an NTLM message (no NTLMSSP signature)")
    message_type = int.from_bytes(blob[8:12], "little")
    if message_type == NEGOTIATE:
        if len(blob) < _NEGOTIATE_MIN:
            raise NtlmError("NTLM NEGOTIATE message is truncated")
        return NtlmMessage(NEGOTIATE)
    if message_type == AUTHENTICATE:
        return _read_authenticate(blob)
    if message_type == CHALLENGE:
        raise NtlmError("an NTLM CHALLENGE message comes from servers, not clients")
    raise NtlmError(f"unknown NTLM message type {message_type}")


def _read_authenticate(blob: bytes) -> NtlmMessage:
    if len(blob) < _AUTH_FIXED:
        raise NtlmError("NTLM AUTHENTICATE message is shorter than its fixed fields")
    flags = int.from_bytes(blob[_FLAGS_AT : _FLAGS_AT + 4], "little")
    unicode = bool(flags & NEGOTIATE_UNICODE)
    user = _text(blob, _USER_AT, unicode, "UserName")
    domain = _text(blob, _DOMAIN_AT, unicode, "DomainName")
    # The other buffers are not used, but a message whose buffers point outside it is
    # not one the server would accept either: refuse it here.
    for at, what in _UNUSED_BUFFERS:
        _buffer(blob, at, what)
    if not user and _buffer(blob, _NT_RESPONSE_AT, "NtChallengeResponse"):
        raise NtlmError("NTLM AUTHENTICATE message has a response but no user name")
    return NtlmMessage(AUTHENTICATE, user, domain)


def _buffer(blob: bytes, at: int, what: str) -> bytes:
    """The bytes a security buffer (MS-NLMP 2.2.2.10) at ``at`` points to."""
    length = int.from_bytes(blob[at : at + 2], "little")
    offset = int.from_bytes(blob[at + 4 : at + 8], "little")
    if length == 0:
        return b""
    if offset < _AUTH_FIXED or offset + length > len(blob):
        raise NtlmError(f"NTLM {what} points outside the message")
    return blob[offset : offset + length]


def _text(blob: bytes, at: int, unicode: bool, what: str) -> str:
    raw = _buffer(blob, at, what)
    try:
        # Without NTLMSSP_NEGOTIATE_UNICODE the names are in the client's OEM code page,
        # which the gateway cannot know: only ASCII reads the same in every one.
        text = raw.decode("utf-16-le") if unicode else raw.decode("ascii")
    except UnicodeDecodeError:
        charset = "UTF-16LE" if unicode else "ASCII (OEM code page)"
        raise NtlmError(f"NTLM {what} is not {charset}") from None
    if len(text) > _MAX_NAME or not text.isprintable():
        raise NtlmError(f"NTLM {what} is too long or contains control characters")
    return text


def read_negotiate(blob: bytes) -> NegotiateToken:
    """What a Negotiate (SPNEGO) token carries. Raw NTLM (some clients skip SPNEGO) and
    SPNEGO with NTLM inside yield the NTLM message; anything else is reported by
    mechanism only. A token that claims to be NTLM but is malformed raises."""
    if blob[:8] == SIGNATURE:
        return NegotiateToken(read_ntlm(blob), "ntlm")
    if not blob:
        raise NtlmError("empty Negotiate token")
    try:
        inner = _spnego_inner(blob)
    except _DerError:
        return NegotiateToken(None, "unknown")
    if inner is None:
        return NegotiateToken(None, "kerberos")
    return NegotiateToken(read_ntlm(inner), "ntlm")


class _DerError(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, position after it) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise _DerError("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise _DerError("truncated value")
    return tag, data[pos:end], end


def _children(data: bytes) -> dict[int, bytes]:
    """The elements of a constructed value by tag (SPNEGO's fields are context tags)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        tag, value, pos = _tlv(data, pos)
        out.setdefault(tag, value)
    return out


def _spnego_inner(blob: bytes) -> bytes | None:
    """The NTLM message inside a SPNEGO token, or None when the token is SPNEGO (or
    bare GSS-API) for another mechanism."""
    tag, value, _ = _tlv(blob, 0)
    if tag == 0x60:  # [APPLICATION 0] InitialContextToken: thisMech, innerContextToken
        oid_tag, oid, pos = _tlv(value, 0)
        if oid_tag != 0x06 or oid != _OID_SPNEGO:
            return None  # a bare Kerberos (or other) GSS-API token
        tag, value, _ = _tlv(value, pos)
        if tag != 0xA0:  # negTokenInit
            raise _DerError("not negTokenInit")
        fields = _children(_sequence(value))
        mech_types = _children_list(_sequence(fields.get(0xA0, b"")))
        token = fields.get(0xA2)
        if not mech_types or mech_types[0] != _OID_NTLMSSP or token is None:
            return None  # the optimistic token belongs to the first mechanism
        return _octets(token)
    if tag == 0xA1:  # negTokenResp
        fields = _children(_sequence(value))
        token = fields.get(0xA2)
        if token is None:
            return None
        inner = _octets(token)
        return inner if inner[:8] == SIGNATURE else None
    raise _DerError("not SPNEGO")


def _sequence(value: bytes) -> bytes:
    if not value:
        return b""
    tag, inner, _ = _tlv(value, 0)
    if tag != 0x30:
        raise _DerError("expected a SEQUENCE")
    return inner


def _children_list(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _tlv(data, pos)
        if tag == 0x06:
            out.append(value)
    return out


def _octets(value: bytes) -> bytes:
    tag, inner, _ = _tlv(value, 0)
    if tag != 0x04:
        raise _DerError("expected an OCTET STRING")
    return inner
