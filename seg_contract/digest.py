"""The policy digest both sides compute: one definition, so that equal policies give
equal digests on the control plane and on every gateway node.

A policy's digest is the sum, modulo 2**128, of one *term* per device entry, one per
user credential and one for the settings (with the version that wrote them). A term is
the first 16 bytes of BLAKE2b over the item's fields in a fixed order. A sum of terms
is order-independent and can be kept up to date incrementally: replacing an item
subtracts its old term and adds its new one, so neither side ever re-reads a whole
100,000-device policy to digest it after a change.

Every field that can change what a gateway decides or forwards is in a term (for an
entry: user, device id, access, source, version, reason, the device facts the rules
read, and the time it was written), so two policies with the same digest make the same
decisions, and a hand-edited policy file, a lost write or a bug on either side shows up
as a different digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

from seg_contract.models import ClusterSettings, DeviceEntry, UserCredential

MODULUS = 1 << 128
_SEP = "\x1f"


def _term(*fields: str) -> int:
    data = _SEP.join(fields).encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=16).digest(), "big")


def entry_term(entry: DeviceEntry) -> int:
    return _term(
        "device",
        entry.user,
        entry.device_id,
        str(entry.version),
        entry.access.value,
        entry.source.value,
        entry.reason,
        entry.mdm_device_id,
        entry.device_type,
        entry.model,
        entry.os,
        entry.updated_at.isoformat(),
    )


def credential_term(credential: UserCredential) -> int:
    # Device-bound passwords come last and only when there are any, so the term of a
    # credential without them is what it was before they existed.
    bound = tuple(f"{d.device_id}\x1e{d.pw1_hash}" for d in credential.device_passwords)
    return _term(
        "credential",
        credential.user,
        str(credential.version),
        "1" if credential.enabled else "0",
        *credential.pw1_hashes,
        _SEP,
        credential.sealed_pw2,
        credential.updated_at.isoformat(),
        *((_SEP, "bound", *bound) if bound else ()),
    )


def settings_term(settings: ClusterSettings, settings_version: int) -> int:
    return _term("settings", str(settings_version), settings.model_dump_json())


def add(digest: int, term: int) -> int:
    return (digest + term) % MODULUS


def replace(digest: int, old_term: int | None, new_term: int | None) -> int:
    """The digest after one item changed from ``old_term`` to ``new_term`` (None: the
    item was absent before, or is absent after)."""
    if old_term is not None:
        digest -= old_term
    if new_term is not None:
        digest += new_term
    return digest % MODULUS


def policy_digest(
    devices: Iterable[DeviceEntry],
    credentials: Iterable[UserCredential],
    settings: ClusterSettings,
    settings_version: int,
) -> int:
    """The digest of a whole policy (the definition; incremental updates must agree)."""
    total = settings_term(settings, settings_version)
    for entry in devices:
        total += entry_term(entry)
    for credential in credentials:
        total += credential_term(credential)
    return total % MODULUS


def to_hex(digest: int) -> str:
    """The digest as it travels (``GatewayKeepalive.digest``): 32 lower-case hex digits."""
    return f"{digest % MODULUS:032x}"


def from_hex(text: str) -> int:
    if len(text) != 32:
        raise ValueError("a policy digest is 32 hex digits")
    return int(text, 16)
