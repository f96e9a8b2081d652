"""The signed statement of policy (``seg_contract.signing`` signs and verifies it):
what the control plane vouches for about one payload, in exactly one encoding.

Every policy payload (snapshot, delta, push, pong, the 304 confirmation, the trusted key
set) travels with a statement::

    {"cluster_id": "c-1a2b3c4d5e", "format": 1, "issued_at_ms": 1764244800000,
     "kid": "5f0c...", "kind": "snapshot", "payload_sha256": "<64 hex>",
     "since_version": 0, "version": 42}

- ``payload_sha256`` binds the exact payload bytes (the HTTP body after content
  decoding, or the envelope's payload string in UTF-8), so the payload itself needs no
  canonical form and a 40 MB snapshot is hashed once, never sent to KMS;
- ``cluster_id``, ``kind``, ``version`` and ``since_version`` say what the payload is,
  so a payload signed for one cluster, kind or version is refused as another;
- ``issued_at_ms`` (integer milliseconds since the epoch) is the only source of
  freshness: a node's "last confirmed" time is the newest issue time it verified, never
  its own clock at receipt, and never a value in a local file;
- ``kid`` names the key (the first 24 hex digits of the SHA-256 of the key's DER
  SubjectPublicKeyInfo), so two keys can be trusted at once while keys rotate.

Canonical bytes: the statement is JSON with exactly these eight members, keys sorted by
code point, no whitespace (``separators=(",", ":")``), integers in decimal in
``[0, 2**53]``, and strings drawn from restricted ASCII alphabets (no escapes can
occur). A statement is accepted only if it re-encodes to exactly the bytes that were
signed, so each statement has one encoding and no parser differential can matter. It
travels as base64url without padding (canonical: one spelling per token).

May import only the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

STATEMENT_FORMAT = 1
MAX_STATEMENT_BYTES = 1024  # a statement is ~250 bytes; KMS RAW accepts up to 4096
MAX_SIGNATURE_BYTES = 80  # a DER ECDSA P-256 signature is at most 72 bytes
MAX_JSON_INT = 2**53  # integers both sides (and JavaScript consoles) read exactly
KID_HEX_DIGITS = 24
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_KID_RE = re.compile(rf"^[0-9a-f]{{{KID_HEX_DIGITS}}}$")
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_FIELDS = frozenset(
    {
        "cluster_id",
        "format",
        "issued_at_ms",
        "kid",
        "kind",
        "payload_sha256",
        "since_version",
        "version",
    }
)


class Kind(StrEnum):
    """What a signed payload is."""

    SNAPSHOT = "snapshot"  # PolicySnapshot (GET /gateway/v1/policy)
    DELTA = "delta"  # PolicyDelta (GET /gateway/v1/policy/delta)
    CHANGE = "change"  # PushChange
    RESYNC = "resync"  # PushResync
    REVOKED = "revoked"  # PushRevoked
    PONG = "pong"  # PushPong
    CONFIRM = "confirm"  # "version V is current" with an empty payload (the 304)
    KEYS = "keys"  # SigningKeySet (GET /gateway/v1/signing-keys)


# Kinds whose ``version`` is the cluster's policy version (keys: the key set's).
POLICY_KINDS = frozenset({Kind.SNAPSHOT, Kind.DELTA, Kind.CHANGE, Kind.PONG, Kind.CONFIRM})


class RejectReason(StrEnum):
    """Why signed input was refused: the label of ``seg_gateway_policy_rejected_total``."""

    UNSIGNED = "unsigned"  # no statement or signature where one is required
    MALFORMED = "malformed"  # tokens or statement do not parse, or are not canonical
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    PAYLOAD_MISMATCH = "payload_mismatch"  # the payload is not the one signed
    WRONG_CLUSTER = "wrong_cluster"
    WRONG_KIND = "wrong_kind"
    REPLAYED = "replayed"  # older than what the node holds, for a kind that forbids it
    ISSUED_IN_FUTURE = "issued_in_future"
    EXPIRED = "expired"  # live input issued longer ago than ``max_age_ms``


class SignatureRejected(ValueError):
    """Signed input that must not be applied. ``reason`` is a small fixed set (a metric
    label); ``detail`` is for logs and never contains key material or payload bytes."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# --- base64url --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(token: str, what: str, max_bytes: int) -> bytes:
    """Strict base64url without padding: the canonical encoding only (so a token has
    exactly one spelling), bounded before decoding."""
    if not isinstance(token, str) or not token:
        raise SignatureRejected(RejectReason.MALFORMED, f"{what} is empty")
    if len(token) > (max_bytes * 4 + 2) // 3 or not _B64URL_RE.match(token):
        raise SignatureRejected(RejectReason.MALFORMED, f"{what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise SignatureRejected(RejectReason.MALFORMED, f"{what} is not base64url") from None
    if b64url(raw) != token:
        raise SignatureRejected(RejectReason.MALFORMED, f"{what} is not canonical base64url")
    return raw


# --- the statement ------------------------------------------------------------------------


def _int_in_range(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_JSON_INT:
        raise SignatureRejected(RejectReason.MALFORMED, f"{name} must be an integer in [0, 2^53]")
    return value


def _matching(value: object, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise SignatureRejected(RejectReason.MALFORMED, f"{name} is malformed")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SignatureRejected(RejectReason.MALFORMED, f"duplicate member {key!r}")
        out[key] = value
    return out


@dataclass(frozen=True)
class Statement:
    """What the control plane vouches for (see the module doc)."""

    kid: str
    cluster_id: str
    kind: Kind
    version: int
    issued_at_ms: int
    payload_sha256: str
    since_version: int = 0
    format: int = STATEMENT_FORMAT

    def __post_init__(self) -> None:
        # The same checks whether built here or parsed: nothing non-canonical can exist.
        if self.format != STATEMENT_FORMAT:
            raise SignatureRejected(RejectReason.MALFORMED, f"unknown format {self.format!r}")
        _matching(self.kid, _KID_RE, "kid")
        _matching(self.cluster_id, _CLUSTER_RE, "cluster_id")
        if not isinstance(self.kind, Kind):
            raise SignatureRejected(RejectReason.MALFORMED, "kind is not a Kind")
        _int_in_range(self.version, "version")
        _int_in_range(self.since_version, "since_version")
        _int_in_range(self.issued_at_ms, "issued_at_ms")
        _matching(self.payload_sha256, _SHA256_RE, "payload_sha256")
        if self.kind is Kind.DELTA:
            if self.since_version > self.version:
                raise SignatureRejected(RejectReason.MALFORMED, "since_version > version")
        elif self.since_version != 0:
            raise SignatureRejected(RejectReason.MALFORMED, "since_version is for deltas only")

    def canonical_bytes(self) -> bytes:
        members = {
            "cluster_id": self.cluster_id,
            "format": self.format,
            "issued_at_ms": self.issued_at_ms,
            "kid": self.kid,
            "kind": self.kind.value,
            "payload_sha256": self.payload_sha256,
            "since_version": self.since_version,
            "version": self.version,
        }
        return json.dumps(members, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> Statement:
        """The statement in ``data``, which must be its canonical encoding."""
        if len(data) > MAX_STATEMENT_BYTES:
            raise SignatureRejected(RejectReason.MALFORMED, "statement is too long")
        try:
            raw = json.loads(data.decode("ascii"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, SignatureRejected):
                raise
            raise SignatureRejected(RejectReason.MALFORMED, "statement is not JSON") from None
        if not isinstance(raw, dict) or set(raw) != _FIELDS:
            raise SignatureRejected(RejectReason.MALFORMED, "statement members are not the 8")
        try:
            kind = Kind(raw["kind"])
        except ValueError:
            raise SignatureRejected(RejectReason.MALFORMED, "unknown kind") from None
        statement = cls(
            kid=raw["kid"],
            cluster_id=raw["cluster_id"],
            kind=kind,
            version=raw["version"],
            issued_at_ms=raw["issued_at_ms"],
            payload_sha256=raw["payload_sha256"],
            since_version=raw["since_version"],
            format=_int_in_range(raw["format"], "format"),
        )
        if statement.canonical_bytes() != data:
            raise SignatureRejected(RejectReason.MALFORMED, "statement is not canonical")
        return statement
