"""Credential substitution (the seed's Google Apps PW1 -> PW2), set from the console.

- The upstream password (PW2) is sealed at intake to the cluster's X25519 public key
  (``seg_contract.crypto.seal``): the control plane never stores, returns or logs it in
  the clear, and cannot open what it stored; only the cluster's gateways can.
- A device password (PW1) is generated here for one EAS DeviceId, returned to the admin
  once, and stored only as an scrypt hash bound to that device (``DevicePassword``): a
  gateway accepts it from that DeviceId only. A user holds one per device (issuing again
  for a device replaces its password). Passwords issued before binding existed
  (``UserCredential.pw1_hashes``) keep working from any device until the admin removes
  them (``remove_unbound_passwords``), the explicit migration.
- Every change is a ``UserCredential`` entry under the cluster's next policy version,
  pushed to every node (``policy_changes.change_credential``). Removing substitution
  writes a disabled, empty entry, so nodes that apply it forget the secrets.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from lambdas.domain.records import ClusterRecord
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.errors import Conflict, InvalidInput, NotFound
from lambdas.usecases.policy_changes import PolicyStores, change_credential
from seg_contract import DevicePassword, UserCredential, normalize_device_id, normalize_user
from seg_contract.crypto import PasswordHashError, SealError, hash_device_password, seal

MAX_DEVICE_PASSWORDS = 50  # UserCredential.device_passwords' bound
# Device passwords are typed on phones: lower-case letters and digits without look-alikes
# (no 0/o, 1/l/i), 4 groups of 5 = 20 symbols of 5 bits = 100 bits.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_GROUPS, _GROUP_LEN = 4, 5


def new_device_password() -> str:
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LEN)) for _ in range(_GROUPS))
    return "-".join(groups)


def _user(raw: str) -> str:
    user = normalize_user(raw)
    if not user:
        raise InvalidInput("user must not be empty")
    return user


def _held(
    stores: PolicyStores, cluster_id: str, user: str
) -> tuple[ClusterRecord, str, UserCredential | None]:
    """The cluster (or ``NotFound``), the normalised user and the entry it holds now."""
    name = _user(user)
    cluster = require_cluster(stores.clusters, cluster_id)
    return cluster, name, stores.entries.get_credential(cluster_id, name)


def _change(
    stores: PolicyStores,
    cluster_id: str,
    name: str,
    *,
    pw1_hashes: tuple[str, ...],
    device_passwords: tuple[DevicePassword, ...],
    sealed_pw2: str,
    now: datetime,
) -> UserCredential:
    """Store and push the user's entry; enabled exactly when it carries a sealed PW2."""
    return change_credential(
        cluster_id,
        name,
        enabled=bool(sealed_pw2),
        pw1_hashes=pw1_hashes,
        device_passwords=device_passwords,
        sealed_pw2=sealed_pw2,
        clusters=stores.clusters,
        entries=stores.entries,
        connections=stores.connections,
        poster=stores.poster,
        now=now,
    )


def set_upstream_password(
    cluster_id: str, user: str, upstream_password: str, *, stores: PolicyStores, now: datetime
) -> UserCredential:
    """Seal the PW2 to the cluster's key and store it, keeping the user's PW1s."""
    cluster, name, held = _held(stores, cluster_id, user)
    if not cluster.public_key:
        raise Conflict(
            f"cluster {cluster_id} has no public key to seal with; "
            "set it with PUT /console/v1/clusters/{id}/public-key first"
        )
    try:
        sealed = seal(upstream_password, cluster.public_key)
    except SealError as exc:
        raise InvalidInput(str(exc)) from exc
    kept = held is not None and held.enabled
    return _change(
        stores,
        cluster_id,
        name,
        pw1_hashes=held.pw1_hashes if held is not None and kept else (),
        device_passwords=held.device_passwords if held is not None and kept else (),
        sealed_pw2=sealed,
        now=now,
    )


def _device(raw: str) -> str:
    device_id = normalize_device_id(raw)
    if not device_id:
        raise InvalidInput("device_id must not be empty")
    if len(device_id) > 128 or not device_id.isprintable():
        raise InvalidInput("device_id must be at most 128 printable characters")
    return device_id


def issue_device_password(
    cluster_id: str, user: str, device_id: str, *, stores: PolicyStores, now: datetime
) -> str:
    """Generate a PW1 for one device, store its hash bound to that DeviceId (replacing
    the device's previous one), and return it (the only time it is readable)."""
    _cluster, name, held = _held(stores, cluster_id, user)
    device = _device(device_id)
    if held is None or not held.enabled or not held.sealed_pw2:
        raise Conflict(f"set {name}'s upstream password before issuing a device password")
    others = tuple(d for d in held.device_passwords if normalize_device_id(d.device_id) != device)
    if len(others) + len(held.pw1_hashes) >= MAX_DEVICE_PASSWORDS:
        raise Conflict(f"{name} holds {MAX_DEVICE_PASSWORDS} device passwords: revoke one first")
    password = new_device_password()
    try:
        hashed = hash_device_password(password)
    except PasswordHashError as exc:  # only if the defaults were broken
        raise InvalidInput(str(exc)) from exc
    _change(
        stores,
        cluster_id,
        name,
        pw1_hashes=held.pw1_hashes,
        device_passwords=(*others, DevicePassword(device_id=device, pw1_hash=hashed)),
        sealed_pw2=held.sealed_pw2,
        now=now,
    )
    return password


def revoke_device_password(
    cluster_id: str, user: str, device_id: str, *, stores: PolicyStores, now: datetime
) -> UserCredential:
    """Withdraw the password of one device (its held requests end on every node)."""
    _cluster, name, held = _held(stores, cluster_id, user)
    device = _device(device_id)
    if held is None or not held.enabled:
        raise NotFound(f"no credential substitution for {name} in cluster {cluster_id}")
    kept = tuple(d for d in held.device_passwords if normalize_device_id(d.device_id) != device)
    if len(kept) == len(held.device_passwords):
        raise NotFound(f"{name} has no device password for {device}")
    return _change(
        stores,
        cluster_id,
        name,
        pw1_hashes=held.pw1_hashes,
        device_passwords=kept,
        sealed_pw2=held.sealed_pw2,
        now=now,
    )


def remove_unbound_passwords(
    cluster_id: str, user: str, *, stores: PolicyStores, now: datetime
) -> UserCredential:
    """The migration to device-bound passwords: withdraw the passwords issued before
    binding existed (they work from any of the user's devices)."""
    _cluster, name, held = _held(stores, cluster_id, user)
    if held is None or not held.enabled or not held.pw1_hashes:
        raise NotFound(f"{name} has no unbound device passwords in cluster {cluster_id}")
    return _change(
        stores,
        cluster_id,
        name,
        pw1_hashes=(),
        device_passwords=held.device_passwords,
        sealed_pw2=held.sealed_pw2,
        now=now,
    )


def remove_substitution(
    cluster_id: str, user: str, *, stores: PolicyStores, now: datetime
) -> UserCredential:
    """Write a disabled, empty entry, so the nodes that apply it forget the secrets."""
    _cluster, name, held = _held(stores, cluster_id, user)
    if held is None or not held.enabled:
        raise NotFound(f"no credential substitution for {name} in cluster {cluster_id}")
    return _change(
        stores, cluster_id, name, pw1_hashes=(), device_passwords=(), sealed_pw2="", now=now
    )
