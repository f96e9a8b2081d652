"""Credential substitution crypto that both sides need (the seed's PW1 -> PW2).

- PW1, the device-specific password a device presents, is stored only as a
  self-describing scrypt hash ``scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64>``
  (``UserCredential.pw1_hashes``): the control plane hashes at issue time, gateways
  verify. scrypt (RFC 7914) because PW1 may be typed by a person on a phone.
- PW2, the real upstream password, is sealed at intake to the cluster's X25519 public key
  with libsodium's ``crypto_box_seal`` (PyNaCl ``SealedBox``): the control plane can seal
  but never open it; only the cluster's gateways, holding the private key, can.

Limits on the hash parameters keep a forged or corrupted hash string from making a
gateway burn memory or CPU: n is a power of two in [2^10, 2^20], r in [1, 32], p in
[1, 16], and n * r * 128 bytes (scrypt's memory) at most 64 MiB.

This module may import only the standard library and PyNaCl.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

SCRYPT_PREFIX = "scrypt"
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_N, MAX_N = 2**10, 2**20
MAX_R = 32
MAX_P = 16
MAX_SCRYPT_MEMORY = 64 * 1024 * 1024
# A PW1 is generated (or typed) by a person; 1024 bytes bounds the work of a hostile one.
MAX_PASSWORD_BYTES = 1024
# The sealed PW2 field is bounded at 4096 characters in the contract.
MAX_SEALED_CHARS = 4096
MAX_PLAINTEXT_BYTES = 1024


class SealError(ValueError):
    """A sealed value that cannot be opened with this key (wrong key, tampered, or not a
    sealed box at all). The message never contains key or plaintext material."""


class PasswordHashError(ValueError):
    """A stored PW1 hash that is malformed or has out-of-bounds parameters."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise PasswordHashError(f"{what} is not base64") from None


def _check_params(n: int, r: int, p: int) -> None:
    if not (MIN_N <= n <= MAX_N) or n & (n - 1):
        raise PasswordHashError(f"scrypt n must be a power of two in [{MIN_N}, {MAX_N}]")
    if not 1 <= r <= MAX_R:
        raise PasswordHashError(f"scrypt r must be in [1, {MAX_R}]")
    if not 1 <= p <= MAX_P:
        raise PasswordHashError(f"scrypt p must be in [1, {MAX_P}]")
    if 128 * n * r > MAX_SCRYPT_MEMORY:
        raise PasswordHashError("scrypt parameters need more than 64 MiB")


def _scrypt(password: bytes, salt: bytes, *, n: int, r: int, p: int, dklen: int) -> bytes:
    # maxmem must exceed 128 * n * r; OpenSSL refuses otherwise.
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=128 * n * r + 2**20, dklen=dklen
    )


def hash_device_password(
    password: str,
    *,
    salt: bytes | None = None,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
) -> str:
    """Hash a PW1 into the stored form ``scrypt$n$r$p$salt_b64$hash_b64``."""
    _check_params(n, r, p)
    raw = password.encode("utf-8")
    if not raw or len(raw) > MAX_PASSWORD_BYTES:
        raise PasswordHashError(f"a device password must be 1..{MAX_PASSWORD_BYTES} bytes")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if not 8 <= len(salt) <= 64:
        raise PasswordHashError("salt must be 8..64 bytes")
    digest = _scrypt(raw, salt, n=n, r=r, p=p, dklen=HASH_BYTES)
    return f"{SCRYPT_PREFIX}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_password_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """``(n, r, p, salt, digest)`` of a stored hash; ``PasswordHashError`` if malformed.
    Use it to validate a hash at intake."""
    if len(stored) > 512:
        raise PasswordHashError("hash string is longer than 512 characters")
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCRYPT_PREFIX:
        raise PasswordHashError("hash is not of the form scrypt$n$r$p$salt$hash")
    try:
        if not all(part.isascii() and part.isdecimal() for part in parts[1:4]):
            raise ValueError
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        raise PasswordHashError("scrypt n, r and p must be decimal integers") from None
    _check_params(n, r, p)
    salt = _unb64(parts[4], "salt")
    digest = _unb64(parts[5], "hash")
    if not 8 <= len(salt) <= 64:
        raise PasswordHashError("salt must be 8..64 bytes")
    if not 16 <= len(digest) <= 64:
        raise PasswordHashError("hash must be 16..64 bytes")
    return n, r, p, salt, digest


def verify_device_password(stored: str, presented: str) -> bool:
    """Whether ``presented`` matches the stored hash (constant-time compare). A malformed
    or out-of-bounds stored hash, or an oversized password, is simply no match."""
    try:
        n, r, p, salt, digest = parse_password_hash(stored)
    except PasswordHashError:
        return False
    raw = presented.encode("utf-8", errors="surrogatepass")
    if not raw or len(raw) > MAX_PASSWORD_BYTES:
        return False
    return hmac.compare_digest(_scrypt(raw, salt, n=n, r=r, p=p, dklen=len(digest)), digest)


def generate_cluster_keypair() -> tuple[str, str]:
    """A new X25519 key pair for a cluster: ``(private_b64, public_b64)``."""
    key = PrivateKey.generate()
    return _b64(bytes(key)), _b64(bytes(key.public_key))


def _key_bytes(key_b64: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(key_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SealError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise SealError(f"{what} is not a 32-byte X25519 key")
    return raw


def public_key_is_valid(public_b64: str) -> bool:
    """Whether a string is a base64 32-byte X25519 public key (for API validation)."""
    try:
        _key_bytes(public_b64, "public key")
    except SealError:
        return False
    return True


def seal(plaintext: str, public_b64: str) -> str:
    """Seal ``plaintext`` to a cluster's public key (``crypto_box_seal``), base64."""
    raw = plaintext.encode("utf-8")
    if len(raw) > MAX_PLAINTEXT_BYTES:
        raise SealError(f"plaintext is longer than {MAX_PLAINTEXT_BYTES} bytes")
    box = SealedBox(PublicKey(_key_bytes(public_b64, "public key")))
    return _b64(box.encrypt(raw))


def unseal(sealed_b64: str, private_b64: str) -> str:
    """Open a sealed value with the cluster's private key; ``SealError`` if it cannot."""
    if len(sealed_b64) > MAX_SEALED_CHARS:
        raise SealError(f"sealed value is longer than {MAX_SEALED_CHARS} characters")
    try:
        sealed = base64.b64decode(sealed_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SealError("sealed value is not base64") from None
    box = SealedBox(PrivateKey(_key_bytes(private_b64, "private key")))
    try:
        raw = box.decrypt(sealed)
    except CryptoError:
        raise SealError(
            "sealed value cannot be opened with this key (wrong key or tampered)"
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SealError("sealed value is not UTF-8 text") from None
