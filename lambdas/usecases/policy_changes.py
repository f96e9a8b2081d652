"""Cluster-wide policy changes made from the console, each committed as one policy
version and pushed to every node (``lambdas.usecases.policy_versions``): settings, and
a user's credential substitution entry (what ``UserCredential`` carries; its hashing and
sealing are the API side's business)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lambdas.domain.policy_commit import Proposal
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.policy_versions import Committed, VersionStores, write_version
from seg_contract import ClusterSettings, DevicePassword, UserCredential, normalize_user


@dataclass(frozen=True)
class CredentialChange:
    """What a user's substitution entry becomes (enabled exactly when it carries a
    sealed PW2)."""

    pw1_hashes: tuple[str, ...]
    sealed_pw2: str
    device_passwords: tuple[DevicePassword, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.sealed_pw2)


# Derives the new entry from the one stored (None: none yet); may raise a use-case error.
Modify = Callable[[UserCredential | None], CredentialChange]


def change_settings(
    cluster_id: str, settings: ClusterSettings, *, stores: VersionStores, now: datetime
) -> Committed:
    """Commit new settings as the next version and push them. The newest version wins: a
    settings change overtaken by a later one is dropped (its version commits empty)."""
    require_cluster(stores.clusters, cluster_id)
    return write_version(cluster_id, lambda _v: Proposal(settings=settings), stores=stores, now=now)


def change_credential(
    cluster_id: str, user: str, modify: Modify, *, stores: VersionStores, now: datetime
) -> UserCredential:
    """Commit a user's substitution entry, derived by ``modify`` from the stored one
    read after the version was taken, and push it. A read-modify-write: a concurrent
    change of the same user is never lost (if it overtook this one, this one is redone
    from it under a newer version)."""
    require_cluster(stores.clusters, cluster_id)
    name = normalize_user(user)

    def propose(version: int) -> Proposal:
        change = modify(stores.entries.get_credential(cluster_id, name))
        credential = UserCredential(
            user=name,
            enabled=change.enabled,
            pw1_hashes=change.pw1_hashes,
            device_passwords=change.device_passwords,
            sealed_pw2=change.sealed_pw2,
            version=version,
            updated_at=now,
        )
        return Proposal(credentials=(credential,))

    committed = write_version(cluster_id, propose, stores=stores, now=now, retry_stale=True)
    (credential,) = committed.plan.written_credentials
    return credential
