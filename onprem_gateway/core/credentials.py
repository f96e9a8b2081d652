"""Gateway-side credential substitution helpers (the seed's PW1 -> PW2).

The hashing and sealing both sides need live in ``seg_contract.crypto`` (the control
plane must not import ``onprem_gateway``); this module adds what only a gateway does:
match a presented PW1 against a user's stored hashes, open PW2, and build the upstream
``Authorization`` value. Nothing here logs, and no error message carries a password.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from enum import Enum

from seg_contract import UserCredential, normalize_device_id
from seg_contract.crypto import (
    MAX_PASSWORD_BYTES,
    SealError,
    unseal,
    verify_device_password,
)

__all__ = [
    "SealError",
    "Substitution",
    "basic_authorization",
    "candidate_hashes",
    "password_still_valid",
    "substitution_enabled",
    "unseal",
    "verify_any",
    "verify_device_password",
]


class Substitution(Enum):
    """Why a device password check did not yield an upstream Authorization."""

    REJECT = "reject"  # wrong or missing device password: 401, never forwarded
    LIMITED = "limited"  # too many wrong passwords for the user or device: 401, no hashing
    UNAVAILABLE = "unavailable"  # this node cannot open PW2 (no or wrong cluster key)


def substitution_enabled(credential: UserCredential | None) -> bool:
    """Whether a user's requests must present a PW1 (an enabled record with hashes)."""
    return (
        credential is not None
        and credential.enabled
        and bool(credential.pw1_hashes or credential.device_passwords)
    )


def password_still_valid(old: UserCredential, new: UserCredential | None, device_id: str) -> bool:
    """Whether a request let in under ``old`` (its device password verified) is still
    let in under ``new``: the record still requires a password and every one that
    ``old`` accepted from ``device_id`` is still among ``new``'s."""
    if new is old:
        return True
    if new is None or not substitution_enabled(new):
        return False
    return set(candidate_hashes(old, device_id)) <= set(candidate_hashes(new, device_id))


def candidate_hashes(credential: UserCredential, device_id: str) -> tuple[str, ...]:
    """The PW1 hashes a request from ``device_id`` (normalised; "" for OPTIONS and
    Autodiscover, which name no device) may match: the passwords bound to that device,
    then the legacy unbound ones (issued before binding existed, valid from any device).
    A request without a device may use any of the user's passwords: it reads no mail
    (protocol versions, server settings). Empty: nothing can match, no hashing needed."""
    if device_id:
        bound = tuple(
            d.pw1_hash
            for d in credential.device_passwords
            if normalize_device_id(d.device_id) == device_id
        )
    else:
        bound = tuple(d.pw1_hash for d in credential.device_passwords)
    return bound + credential.pw1_hashes


def verify_any(presented: str, hashes: Sequence[str]) -> bool:
    """Whether ``presented`` matches one of the stored PW1 hashes. Every hash is tried
    (no early exit on a malformed one); each compare is constant-time. Slow by design
    (scrypt): call it off the event loop and cache the outcome."""
    if not presented or len(presented.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        return False
    return any(verify_device_password(stored, presented) for stored in hashes)


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value for ``user`` with ``password`` (RFC 7617)."""
    if ":" in user:
        raise ValueError("a Basic user name cannot contain ':'")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
