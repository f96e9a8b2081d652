"""How a signed payload travels and is stored: with its statement and signature as two
tokens (base64url without padding, ``seg_contract.statement``).

- HTTP: the payload is the body, unchanged (after content decoding), and the tokens are
  the headers ``POLICY_STATEMENT_HEADER`` and ``POLICY_SIGNATURE_HEADER``
  (``seg_contract.http``);
- WebSocket: a ``SignedMessage`` envelope carries both tokens and the payload as a
  string, so the bytes verified are exactly the bytes signed;
- on disk: ``encode_record`` writes the payload as received behind a one-line header,
  so a node can verify it again at start.

Nothing here verifies anything: ``seg_contract.signing.Verifier`` does.

May import only the standard library, pydantic and ``seg_contract``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from seg_contract.http import POLICY_SIGNATURE_HEADER, POLICY_STATEMENT_HEADER
from seg_contract.statement import (
    MAX_STATEMENT_BYTES,
    RejectReason,
    SignatureRejected,
    Statement,
    unb64url,
)


class SignedMessage(BaseModel):
    """The WebSocket envelope of a signed push (``PushChange``, ``PushResync``,
    ``PushRevoked``, ``PushPong``): the payload is the push's JSON as a string, so the
    bytes verified are exactly the bytes signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["signed"] = "signed"
    statement: Annotated[str, Field(min_length=1, max_length=2048)]
    signature: Annotated[str, Field(min_length=1, max_length=128)]
    # API Gateway caps a message at 128 KB; a push is far smaller.
    payload: Annotated[str, Field(max_length=256 * 1024)]


@dataclass(frozen=True)
class SignedPayload:
    """A payload with its statement and signature, as issued or as received."""

    statement_token: str
    signature_token: str
    payload: bytes = field(repr=False)

    def headers(self) -> dict[str, str]:
        """The HTTP response headers that carry the statement and the signature."""
        return {
            POLICY_STATEMENT_HEADER: self.statement_token,
            POLICY_SIGNATURE_HEADER: self.signature_token,
        }

    def envelope(self) -> SignedMessage:
        return SignedMessage(
            statement=self.statement_token,
            signature=self.signature_token,
            payload=self.payload.decode("utf-8"),
        )

    @classmethod
    def from_envelope(cls, message: SignedMessage) -> SignedPayload:
        try:
            payload = message.payload.encode("utf-8")
        except UnicodeEncodeError:
            raise SignatureRejected(RejectReason.MALFORMED, "payload is not UTF-8") from None
        return cls(message.statement, message.signature, payload)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], body: bytes) -> SignedPayload:
        """From an HTTP answer (``headers`` looked up case-insensitively, as httpx and
        Starlette headers are); ``unsigned`` when either header is missing."""
        statement = headers.get(POLICY_STATEMENT_HEADER)
        signature = headers.get(POLICY_SIGNATURE_HEADER)
        if not statement or not signature:
            raise SignatureRejected(RejectReason.UNSIGNED, "no policy statement or signature")
        return cls(statement, signature, body)

    def statement(self) -> Statement:
        """The statement, parsed but NOT verified (for logs and storage headers)."""
        return Statement.parse(unb64url(self.statement_token, "statement", MAX_STATEMENT_BYTES))


_RECORD_FORMAT = "seg-signed"
_MAX_RECORD_HEADER = 4096


def encode_record(signed: SignedPayload) -> bytes:
    """A signed payload as one file record: a JSON header line, then the payload bytes
    exactly as received (what a node stores, and re-verifies at start)."""
    header = {
        "format": _RECORD_FORMAT,
        "v": 1,
        "statement": signed.statement_token,
        "signature": signed.signature_token,
        "length": len(signed.payload),
    }
    return json.dumps(header, separators=(",", ":")).encode("ascii") + b"\n" + signed.payload


def decode_record(data: bytes, offset: int = 0) -> tuple[SignedPayload, int]:
    """The record at ``offset`` in ``data`` and its length in bytes (records can be
    concatenated: the next one starts at ``offset + length``, and nothing before the
    payload is copied); ``SignatureRejected(malformed)`` when it is not one. Not
    verified."""
    newline = data.find(b"\n", offset, offset + _MAX_RECORD_HEADER)
    if newline < 0:
        raise SignatureRejected(RejectReason.MALFORMED, "no record header")
    try:
        header = json.loads(data[offset:newline].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise SignatureRejected(RejectReason.MALFORMED, "record header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != _RECORD_FORMAT:
        raise SignatureRejected(RejectReason.MALFORMED, "not a signed record")
    if header.get("v") != 1:
        raise SignatureRejected(RejectReason.MALFORMED, "unsupported record version")
    length = header.get("length")
    statement, signature = header.get("statement"), header.get("signature")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise SignatureRejected(RejectReason.MALFORMED, "record length is not an integer")
    if not isinstance(statement, str) or not isinstance(signature, str):
        raise SignatureRejected(RejectReason.MALFORMED, "record lacks statement or signature")
    end = newline + 1 + length
    if end > len(data):
        raise SignatureRejected(RejectReason.MALFORMED, "record is truncated")
    return SignedPayload(statement, signature, data[newline + 1 : end]), end - offset
