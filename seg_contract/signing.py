"""Signed policy: the statement the control plane signs for every policy payload, and
the one place both sides sign and verify it.

Theory of operation
-------------------
A gateway must enforce only what its control plane decided, even when someone can
rewrite the control-plane path (a TLS-inspecting proxy, a hijacked DNS name, a stolen
cluster credential) or the node's disk. So every policy payload (snapshot, delta, push,
pong, the 304 confirmation, the trusted key set) travels with a *statement* signed by
the control plane's KMS key (ECDSA P-256 / SHA-256)::

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
signed, so each statement has one encoding and no parser differential can matter.

Signature: ECDSA over SHA-256 of the canonical bytes, DER-encoded; exactly what KMS
``Sign`` returns for an ``ECC_NIST_P256`` key with ``ECDSA_SHA_256`` and
``MessageType=RAW`` (a statement is a few hundred bytes, far below KMS's 4096-byte RAW
limit; RAW rather than DIGEST because moto 5.2 ignores ``MessageType`` and would hash a
digest again, so the local runtime could not share the code path with AWS).

Transport: both tokens are base64url without padding. On HTTP the payload is the body,
unchanged, and the tokens travel in ``seg_contract.http.POLICY_STATEMENT_HEADER`` and
``POLICY_SIGNATURE_HEADER``; on the WebSocket a ``SignedMessage`` envelope carries both
tokens and the payload as a string, so the bytes verified are the bytes signed.

Verification (``Verifier.verify``) checks, in this order, and raises one
``SignatureRejected`` whose ``reason`` labels ``seg_gateway_policy_rejected_total``:
the tokens parse (``malformed``), the key is trusted (``unknown_key``), the signature
(``bad_signature``), the payload hash (``payload_mismatch``), the cluster
(``wrong_cluster``), the kind (``wrong_kind``), the version rules (``replayed``), the
issue time not beyond the allowed clock skew in the future (``issued_in_future``) and,
for input that just arrived from the network, not older than ``max_age_ms``
(``expired``). The version rules, per kind, against what the node holds (``Applied``):

=========  ==============================  ==========================================
kind       older than held                 why
=========  ==============================  ==========================================
snapshot   refused (``replayed``)          it *replaces* the policy: an old one would
                                           roll back blocks; the control plane never
                                           states a version below one it stated
delta      ignored (authentic, no-op)      per key, newest wins; a delta older than
                                           the applied version raced with pushes
change     ignored (duplicate)             pushes and deltas overlap by design
pong,      ignored (no freshness gained)   a pong can overtake a push on the socket;
confirm                                    an older issue time never moves freshness
keys       refused (``replayed``)          an old key set could bring back a retired
                                           (perhaps compromised) key
resync,    (no version rule)               commands; ``max_age_ms`` bounds replays
revoked
=========  ==============================  ==========================================

This module may import only the standard library, pydantic and ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field

from seg_contract.http import POLICY_SIGNATURE_HEADER, POLICY_STATEMENT_HEADER

STATEMENT_FORMAT = 1
MAX_STATEMENT_BYTES = 1024  # a statement is ~250 bytes; KMS RAW accepts up to 4096
MAX_SIGNATURE_BYTES = 80  # a DER ECDSA P-256 signature is at most 72 bytes
MAX_JSON_INT = 2**53  # integers both sides (and JavaScript consoles) read exactly
KID_HEX_DIGITS = 24
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000
DEFAULT_MAX_AGE_MS = 15 * 60 * 1000
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


class SigningError(RuntimeError):
    """A signer could not sign (a KMS outage, a key that is not ECC P-256)."""


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


# --- keys ---------------------------------------------------------------------------------


def kid_of(spki_der: bytes) -> str:
    """The key id: a fingerprint of the key, so a key id can never name another key."""
    return hashlib.sha256(spki_der).hexdigest()[:KID_HEX_DIGITS]


@dataclass(frozen=True)
class TrustedKey:
    """A public key a verifier accepts, with its key id."""

    kid: str
    spki_der: bytes = field(repr=False)
    key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)

    @property
    def spki_b64(self) -> str:
        """Standard base64 of the DER SubjectPublicKeyInfo: what ``aws kms
        get-public-key --query PublicKey --output text`` prints, and what a node pins."""
        return base64.b64encode(self.spki_der).decode("ascii")

    def __str__(self) -> str:
        return self.kid

    @classmethod
    def from_der(cls, spki_der: bytes) -> TrustedKey:
        try:
            key = serialization.load_der_public_key(spki_der)
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("not a DER SubjectPublicKeyInfo") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("not an ECC NIST P-256 public key")
        canonical = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(kid=kid_of(canonical), spki_der=canonical, key=key)


def load_public_key(text: str) -> TrustedKey:
    """A P-256 public key from base64 DER SubjectPublicKeyInfo (what KMS GetPublicKey
    returns) or from PEM; ``ValueError`` with a reason otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
            raise ValueError("not a PEM public key") from None
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return TrustedKey.from_der(der)
    if len(text) > 1024:
        raise ValueError("longer than any P-256 public key")
    try:
        der = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not base64 (expected the DER SubjectPublicKeyInfo in base64)") from None
    return TrustedKey.from_der(der)


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


# --- signed payloads, and how they travel ---------------------------------------------------


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


def decode_record(data: bytes) -> tuple[SignedPayload, int]:
    """The record at the start of ``data`` and its length in bytes (records can be
    concatenated); ``SignatureRejected(malformed)`` when it is not one. Not verified."""
    newline = data.find(b"\n", 0, _MAX_RECORD_HEADER)
    if newline < 0:
        raise SignatureRejected(RejectReason.MALFORMED, "no record header")
    try:
        header = json.loads(data[:newline].decode("ascii"))
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
    return SignedPayload(statement, signature, data[newline + 1 : end]), end


# --- signing ------------------------------------------------------------------------------


class Signer(Protocol):
    """Anything that signs with an ECC P-256 key: KMS (the control plane) or a local key
    (tests, benchmarks, air-gapped tooling)."""

    @property
    def kid(self) -> str: ...

    def sign(self, message: bytes) -> bytes:
        """DER ECDSA signature over SHA-256 of ``message``; ``SigningError`` if it cannot."""
        ...


def issue(
    signer: Signer,
    *,
    cluster_id: str,
    kind: Kind,
    version: int,
    payload: bytes,
    issued_at_ms: int,
    since_version: int = 0,
) -> SignedPayload:
    """Sign ``payload`` as ``kind`` at ``version`` for ``cluster_id``: the one code path
    of every signer."""
    statement = Statement(
        kid=signer.kid,
        cluster_id=cluster_id,
        kind=kind,
        version=version,
        issued_at_ms=issued_at_ms,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        since_version=since_version,
    )
    data = statement.canonical_bytes()
    signature = signer.sign(data)
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise SigningError("the signer returned no DER ECDSA P-256 signature")
    return SignedPayload(b64url(data), b64url(signature), payload)


class LocalSigner:
    """A software P-256 key (tests, benchmarks, air-gapped tooling)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("a policy signing key is ECC NIST P-256")
        self._key = private_key
        self.public = TrustedKey.from_der(
            private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @classmethod
    def generate(cls) -> LocalSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> LocalSigner:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


# --- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What the verifying node holds: the version rules compare against it."""

    version: int = 0  # applied policy version (0: none)
    confirmed_at_ms: int = 0  # issue time of the newest statement that vouched for it
    keys_version: int = 0  # version of the newest trusted key set


class Disposition(StrEnum):
    APPLY = "apply"
    IGNORE = "ignore"  # authentic, but older than what is held: a harmless no-op


@dataclass(frozen=True)
class Verified:
    statement: Statement
    payload: bytes = field(repr=False)
    disposition: Disposition

    @property
    def apply(self) -> bool:
        return self.disposition is Disposition.APPLY

    def require_fields(self, *, cluster_id: str, version: int, since_version: int = 0) -> None:
        """The parsed payload must say what the statement says (a control-plane bug
        otherwise: the hash already binds the bytes)."""
        s = self.statement
        if (s.cluster_id, s.version, s.since_version) != (cluster_id, version, since_version):
            raise SignatureRejected(
                RejectReason.PAYLOAD_MISMATCH,
                f"the payload is {cluster_id} v{since_version}..{version}, the statement "
                f"{s.cluster_id} v{s.since_version}..{s.version}",
            )


class Verifier:
    """Checks signed input against the trusted keys (by kid) and the node's state."""

    def __init__(
        self,
        keys: Iterable[TrustedKey],
        *,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
    ) -> None:
        if max_skew_ms < 0 or max_age_ms < max_skew_ms:
            raise ValueError("need 0 <= max_skew_ms <= max_age_ms")
        self._keys = {k.kid: k for k in keys}
        self.max_skew_ms = max_skew_ms
        self.max_age_ms = max_age_ms

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(
        self,
        signed: SignedPayload,
        *,
        cluster_id: str,
        kinds: Kind | Collection[Kind],
        applied: Applied,
        now_ms: int,
        live: bool = True,
        since_version: int | None = None,
    ) -> Verified:
        """Verify, or raise ``SignatureRejected``. ``live``: the input just arrived from
        the network (False when re-verifying what was stored, whose age is the caller's
        freshness question). ``since_version``: the version a delta was asked for."""
        raw = unb64url(signed.statement_token, "statement", MAX_STATEMENT_BYTES)
        signature = unb64url(signed.signature_token, "signature", MAX_SIGNATURE_BYTES)
        statement = Statement.parse(raw)
        key = self._keys.get(statement.kid)
        if key is None:
            raise SignatureRejected(RejectReason.UNKNOWN_KEY, f"key {statement.kid} not trusted")
        try:
            key.key.verify(signature, raw, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise SignatureRejected(
                RejectReason.BAD_SIGNATURE, f"signature does not verify with key {key.kid}"
            ) from None
        if hashlib.sha256(signed.payload).hexdigest() != statement.payload_sha256:
            raise SignatureRejected(RejectReason.PAYLOAD_MISMATCH, "payload hash differs")
        if statement.cluster_id != cluster_id:
            raise SignatureRejected(
                RejectReason.WRONG_CLUSTER, f"signed for cluster {statement.cluster_id}"
            )
        expected = {kinds} if isinstance(kinds, Kind) else set(kinds)
        if statement.kind not in expected:
            raise SignatureRejected(
                RejectReason.WRONG_KIND, f"signed as {statement.kind.value}, expected another"
            )
        disposition = _version_rule(statement, applied, since_version)
        if statement.issued_at_ms > now_ms + self.max_skew_ms:
            raise SignatureRejected(
                RejectReason.ISSUED_IN_FUTURE,
                f"issued {statement.issued_at_ms - now_ms} ms in the future "
                f"(allowed skew {self.max_skew_ms} ms)",
            )
        if live and statement.issued_at_ms < now_ms - self.max_age_ms:
            raise SignatureRejected(
                RejectReason.EXPIRED,
                f"issued {now_ms - statement.issued_at_ms} ms ago (max {self.max_age_ms} ms)",
            )
        return Verified(statement, signed.payload, disposition)


def _version_rule(statement: Statement, applied: Applied, since_version: int | None) -> Disposition:
    kind, version = statement.kind, statement.version
    if kind is Kind.SNAPSHOT:
        if version < applied.version:
            raise SignatureRejected(
                RejectReason.REPLAYED, f"snapshot v{version} is older than v{applied.version}"
            )
        return Disposition.APPLY
    if kind is Kind.DELTA:
        if since_version is not None and statement.since_version != since_version:
            raise SignatureRejected(
                RejectReason.REPLAYED,
                f"delta since v{statement.since_version}, asked since v{since_version}",
            )
        return Disposition.IGNORE if version < applied.version else Disposition.APPLY
    if kind is Kind.CHANGE:
        return Disposition.IGNORE if version <= applied.version else Disposition.APPLY
    if kind in (Kind.PONG, Kind.CONFIRM):
        older = version < applied.version or statement.issued_at_ms <= applied.confirmed_at_ms
        return Disposition.IGNORE if older else Disposition.APPLY
    if kind is Kind.KEYS:
        if version < applied.keys_version:
            raise SignatureRejected(
                RejectReason.REPLAYED,
                f"key set v{version} is older than v{applied.keys_version}",
            )
        return Disposition.IGNORE if version == applied.keys_version else Disposition.APPLY
    return Disposition.APPLY  # resync, revoked: bounded by max_age_ms
