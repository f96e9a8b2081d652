"""Credential substitution (the seed's Google Apps PW1 -> PW2), set from the console.

- The upstream password (PW2) is sealed at intake to the cluster's X25519 public key
  (``seg_contract.crypto.seal``): the control plane never stores, returns or logs it in
  the clear, and cannot open what it stored; only the cluster's gateways can.
- A device password (PW1) is generated here, returned to the admin once, and stored only
  as an scrypt hash; a user may hold several (one per device), newest last.
- Every change is a ``UserCredential`` entry committed as the cluster's next policy
  version and pushed to every node (``policy_changes.change_credential``: a
  read-modify-write of the stored entry, so two admins' changes never lose one another).
  Removing substitution writes a disabled, empty entry, so nodes that apply it forget
  the secrets.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from lambdas.domain.records import ClusterRecord
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.errors import Conflict, InvalidInput, NotFound
from lambdas.usecases.policy_changes import CredentialChange, change_credential
from lambdas.usecases.policy_versions import VersionStores
from seg_contract import UserCredential, normalize_user
from seg_contract.crypto import PasswordHashError, SealError, hash_device_password, seal

MAX_DEVICE_PASSWORDS = 50  # UserCredential.pw1_hashes' bound
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


def _kept_hashes(held: UserCredential | None) -> tuple[str, ...]:
    return held.pw1_hashes if held is not None and held.enabled else ()


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
        lambda held: CredentialChange(_kept_hashes(held), sealed),
        stores=stores,
        now=now,
    )


def _substituted(name: str, held: UserCredential | None) -> UserCredential:
    if held is None or not held.enabled or not held.sealed_pw2:
        raise Conflict(f"set {name}'s upstream password before issuing a device password")
    return held


def issue_device_password(
    cluster_id: str, user: str, *, stores: VersionStores, now: datetime
) -> str:
    """Generate a PW1, store its hash, and return it (the only time it is readable)."""
    _cluster, name = _checked(stores, cluster_id, user)
    _substituted(name, stores.entries.get_credential(cluster_id, name))  # fail fast
    password = new_device_password()
    try:
        hashed = hash_device_password(password)
    except PasswordHashError as exc:  # only if the defaults were broken
        raise InvalidInput(str(exc)) from exc

    def add_hash(stored: UserCredential | None) -> CredentialChange:
        held = _substituted(name, stored)
        hashes = (*held.pw1_hashes, hashed)[-MAX_DEVICE_PASSWORDS:]
        return CredentialChange(hashes, held.sealed_pw2)

    change_credential(cluster_id, name, add_hash, stores=stores, now=now)
    return password


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
