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
- Every change is a ``UserCredential`` entry committed as the cluster's next policy
  version and pushed to every node (``policy_changes.change_credential``: a
  read-modify-write of the stored entry, so two admins' changes never lose one another).
  Removing substitution writes a disabled, empty entry, so nodes that apply it forget
  the secrets.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from lambdas.domain.errors import Conflict, InvalidInput, NotFound
from lambdas.domain.records import ClusterRecord
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.policy_changes import CredentialChange, change_credential
from lambdas.usecases.policy_versions import VersionStores
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


def _checked(stores: VersionStores, cluster_id: str, user: str) -> tuple[ClusterRecord, str]:
    """The cluster (or ``NotFound``) and the normalised user."""
    name = _user(user)
    return require_cluster(stores.clusters, cluster_id), name


def _kept(held: UserCredential | None, sealed_pw2: str) -> CredentialChange:
    """The user's device passwords (bound and legacy) with a new sealed PW2."""
    if held is None or not held.enabled:
        return CredentialChange((), sealed_pw2)
    return CredentialChange(held.pw1_hashes, sealed_pw2, held.device_passwords)


def _device(raw: str) -> str:
    device_id = normalize_device_id(raw)
    if not device_id:
        raise InvalidInput("device_id must not be empty")
    if len(device_id) > 128 or not device_id.isprintable():
        raise InvalidInput("device_id must be at most 128 printable characters")
    return device_id


def _others(held: UserCredential, device: str) -> tuple[DevicePassword, ...]:
    return tuple(d for d in held.device_passwords if normalize_device_id(d.device_id) != device)


def set_upstream_password(
    cluster_id: str, user: str, upstream_password: str, *, stores: VersionStores, now: datetime
) -> UserCredential:
    """Seal the PW2 to the cluster's key and store it, keeping the user's PW1s."""
    cluster, name = _checked(stores, cluster_id, user)
    if not cluster.public_key:
        raise Conflict(
            f"cluster {cluster_id} has no public key to seal with; "
            "set it with PUT /console/v1/clusters/{id}/public-key first"
        )
    try:
        sealed = seal(upstream_password, cluster.public_key)
    except SealError as exc:
        raise InvalidInput(str(exc)) from exc
    return change_credential(
        cluster_id,
        name,
        lambda held: _kept(held, sealed),
        stores=stores,
        now=now,
    )


def _substituted(name: str, held: UserCredential | None) -> UserCredential:
    if held is None or not held.enabled or not held.sealed_pw2:
        raise Conflict(f"set {name}'s upstream password before issuing a device password")
    return held


def issue_device_password(
    cluster_id: str, user: str, device_id: str, *, stores: VersionStores, now: datetime
) -> str:
    """Generate a PW1 for one device, store its hash bound to that DeviceId (replacing
    the device's previous one), and return it (the only time it is readable)."""
    _cluster, name = _checked(stores, cluster_id, user)
    device = _device(device_id)

    def check(stored: UserCredential | None) -> UserCredential:
        held = _substituted(name, stored)
        if len(_others(held, device)) + len(held.pw1_hashes) >= MAX_DEVICE_PASSWORDS:
            raise Conflict(f"{name} holds {MAX_DEVICE_PASSWORDS} device passwords: revoke one")
        return held

    check(stores.entries.get_credential(cluster_id, name))  # fail fast
    password = new_device_password()
    try:
        hashed = hash_device_password(password)
    except PasswordHashError as exc:  # only if the defaults were broken
        raise InvalidInput(str(exc)) from exc

    def add(stored: UserCredential | None) -> CredentialChange:
        held = check(stored)
        bound = (*_others(held, device), DevicePassword(device_id=device, pw1_hash=hashed))
        return CredentialChange(held.pw1_hashes, held.sealed_pw2, bound)

    change_credential(cluster_id, name, add, stores=stores, now=now)
    return password


def revoke_device_password(
    cluster_id: str, user: str, device_id: str, *, stores: VersionStores, now: datetime
) -> UserCredential:
    """Withdraw the password of one device (its held requests end on every node)."""
    _cluster, name = _checked(stores, cluster_id, user)
    device = _device(device_id)

    def remove(held: UserCredential | None) -> CredentialChange:
        if held is None or not held.enabled:
            raise NotFound(f"no credential substitution for {name} in cluster {cluster_id}")
        kept = _others(held, device)
        if len(kept) == len(held.device_passwords):
            raise NotFound(f"{name} has no device password for {device}")
        return CredentialChange(held.pw1_hashes, held.sealed_pw2, kept)

    remove(stores.entries.get_credential(cluster_id, name))  # fail fast, before a version
    return change_credential(cluster_id, name, remove, stores=stores, now=now)


def remove_unbound_passwords(
    cluster_id: str, user: str, *, stores: VersionStores, now: datetime
) -> UserCredential:
    """The migration to device-bound passwords: withdraw the passwords issued before
    binding existed (they work from any of the user's devices)."""
    _cluster, name = _checked(stores, cluster_id, user)

    def remove(held: UserCredential | None) -> CredentialChange:
        if held is None or not held.enabled or not held.pw1_hashes:
            raise NotFound(f"{name} has no unbound device passwords in cluster {cluster_id}")
        return CredentialChange((), held.sealed_pw2, held.device_passwords)

    remove(stores.entries.get_credential(cluster_id, name))  # fail fast, before a version
    return change_credential(cluster_id, name, remove, stores=stores, now=now)


def remove_substitution(
    cluster_id: str, user: str, *, stores: VersionStores, now: datetime
) -> UserCredential:
    """Write a disabled, empty entry, so the nodes that apply it forget the secrets."""
    _cluster, name = _checked(stores, cluster_id, user)

    def remove(held: UserCredential | None) -> CredentialChange:
        if held is None or not held.enabled:
            raise NotFound(f"no credential substitution for {name} in cluster {cluster_id}")
        return CredentialChange((), "")

    remove(stores.entries.get_credential(cluster_id, name))  # fail fast, before a version
    return change_credential(cluster_id, name, remove, stores=stores, now=now)
