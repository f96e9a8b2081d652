"""NTLM and SPNEGO messages built byte by byte from MS-NLMP 2.2.1 and RFC 4178 (not from
the parser under test), for the unit and integration tests."""

from __future__ import annotations

import base64
import struct

SIGNATURE = b"NTLMSSP\x00"
UNICODE = 0x00000001
OEM = 0x00000002
NTLMSSP_OID = bytes.fromhex("2b06010401823702020a")
SPNEGO_OID = bytes.fromhex("2b0601050502")
KRB5_OID = bytes.fromhex("2a864886f712010202")


def negotiate(flags: int = UNICODE | OEM | 0x00000200) -> bytes:
    """NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1) with empty domain and workstation fields."""
    empty = struct.pack("<HHI", 0, 0, 0)
    return SIGNATURE + struct.pack("<I", 1) + struct.pack("<I", flags) + empty + empty


def challenge() -> bytes:
    """A minimal CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2): what a server sends back."""
    target = struct.pack("<HHI", 0, 0, 48)
    return (
        SIGNATURE
        + struct.pack("<I", 2)
        + target
        + struct.pack("<I", UNICODE)
        + b"\x01\x23\x45\x67\x89\xab\xcd\xef"
        + b"\x00" * 8
        + struct.pack("<HHI", 0, 0, 48)
    )


def authenticate(
    user: str,
    domain: str = "",
    *,
    unicode: bool = True,
    workstation: str = "PHONE",
    nt_response: bytes = b"\x11" * 24,
    raw_user: bytes | None = None,
) -> bytes:
    """AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3): fixed fields, then the payload in the
    order Windows writes it (domain, user, workstation, LM, NT)."""
    enc = "utf-16-le" if unicode else "ascii"
    fields = [
        domain.encode(enc),
        raw_user if raw_user is not None else user.encode(enc),
        workstation.encode(enc),
        b"\x00" * 24,
        nt_response,
        b"",
    ]
    offset = 64
    buffers = []
    payload = b""
    for data in fields:
        buffers.append(struct.pack("<HHI", len(data), len(data), offset))
        payload += data
        offset += len(data)
    domain_b, user_b, ws_b, lm_b, nt_b, key_b = buffers
    flags = UNICODE if unicode else OEM
    head = (
        SIGNATURE
        + struct.pack("<I", 3)
        + lm_b
        + nt_b
        + domain_b
        + user_b
        + ws_b
        + key_b
        + struct.pack("<I", flags)
    )
    assert len(head) == 64
    return head + payload


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = b"\x81" + bytes([n])
    else:
        length = b"\x82" + n.to_bytes(2, "big")
    return bytes([tag]) + length + value


def spnego_init(mech_token: bytes, first_mech: bytes = NTLMSSP_OID) -> bytes:
    """GSS-API InitialContextToken with a SPNEGO NegTokenInit (RFC 4178 4.2.1)."""
    mech_types = _der(0x30, _der(0x06, first_mech) + _der(0x06, NTLMSSP_OID))
    init = _der(0x30, _der(0xA0, mech_types) + _der(0xA2, _der(0x04, mech_token)))
    return _der(0x60, _der(0x06, SPNEGO_OID) + _der(0xA0, init))


def spnego_response(response_token: bytes) -> bytes:
    """NegTokenResp (RFC 4178 4.2.2) carrying ``response_token``."""
    resp = _der(0x30, _der(0xA0, _der(0x0A, b"\x01")) + _der(0xA2, _der(0x04, response_token)))
    return _der(0xA1, resp)


def kerberos_ticket() -> bytes:
    """A bare GSS-API Kerberos token (RFC 4121 4.1): krb5 OID, then an opaque AP-REQ."""
    return _der(0x60, _der(0x06, KRB5_OID) + b"\x01\x00" + _der(0x6E, b"\x30\x03\x02\x01\x05"))


def header(scheme: str, blob: bytes) -> str:
    return f"{scheme} {base64.b64encode(blob).decode()}"
