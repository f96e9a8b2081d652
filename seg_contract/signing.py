"""Signed policy: the one place both sides sign and verify what the control plane states
to gateways (the statement is ``seg_contract.statement``, its transport
``seg_contract.signed``; both are re-exported here).

Theory of operation
-------------------
A gateway must enforce only what its control plane decided, even when someone can
rewrite the control-plane path (a TLS-inspecting proxy, a hijacked DNS name, a stolen
cluster credential) or the node's disk. So every policy payload travels with a
statement signed by the control plane's KMS key, and the node verifies it with public
keys it trusts (``seg_contract.key_ring``).

Signature: ECDSA over SHA-256 of the statement's canonical bytes, DER-encoded; exactly
what KMS ``Sign`` returns for an ``ECC_NIST_P256`` key with ``ECDSA_SHA_256`` and
``MessageType=RAW`` (a statement is a few hundred bytes, far below KMS's 4096-byte RAW
limit; RAW rather than DIGEST because moto 5.2 ignores ``MessageType`` and would hash a
digest again, so the local runtime could not share the code path with AWS).

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

This module may import only the standard library, ``cryptography`` and ``seg_contract``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from seg_contract.signed import SignedMessage, SignedPayload, decode_record, encode_record
from seg_contract.statement import (
    EMPTY_SHA256,
    KID_HEX_DIGITS,
    MAX_SIGNATURE_BYTES,
    MAX_STATEMENT_BYTES,
    POLICY_KINDS,
    STATEMENT_FORMAT,
    Kind,
    RejectReason,
    SignatureRejected,
    Statement,
    b64url,
    unb64url,
)

__all__ = [
    "DEFAULT_MAX_AGE_MS",
    "DEFAULT_MAX_SKEW_MS",
    "EMPTY_SHA256",
    "MAX_SIGNATURE_BYTES",
    "MAX_STATEMENT_BYTES",
    "POLICY_KINDS",
    "STATEMENT_FORMAT",
    "Applied",
    "Disposition",
    "Kind",
    "LocalSigner",
    "RejectReason",
    "SignatureRejected",
    "SignedMessage",
    "SignedPayload",
    "Signer",
    "SigningError",
    "Statement",
    "TrustedKey",
    "Verified",
    "Verifier",
    "b64url",
    "decode_record",
    "encode_record",
    "issue",
    "kid_of",
    "load_public_key",
    "unb64url",
]

DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000
DEFAULT_MAX_AGE_MS = 15 * 60 * 1000


class SigningError(RuntimeError):
    """A signer could not sign (a KMS outage, a key that is not ECC P-256)."""


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
