"""What one policy version writes, planned from what is stored (pure).

A writer that took version v proposes the entries, credentials and settings v should
carry; ``plan_commit`` compares each with what is stored for its key (read consistently
just before) and yields the conditional writes of one transaction: each key's write is
a compare-and-swap on the version it read, so entries of one key are written in
increasing version order, and each write's digest terms (old and new) go into v's log
record. A key already stored at v or newer is *stale* for v and dropped: a writer that
took a higher version read its inputs later (``lambdas.usecases.compliance``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.domain.policy_log import SETTINGS_KEY, Change, ChangeKind
from seg_contract import ClusterSettings, DeviceEntry, UserCredential
from seg_contract.digest import credential_term, entry_term, settings_term

# DynamoDB's TransactWriteItems takes at most 100 items; one is the log record.
MAX_CHANGES = 99


@dataclass(frozen=True)
class Proposal:
    """What a version should change; entries and credentials carry that version."""

    devices: tuple[DeviceEntry, ...] = ()
    credentials: tuple[UserCredential, ...] = ()
    settings: ClusterSettings | None = None

    @property
    def device_keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.devices)

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(c.user for c in self.credentials)


@dataclass(frozen=True)
class Held:
    """What is stored now for a proposal's keys (absent keys are left out)."""

    devices: Mapping[str, DeviceEntry]
    credentials: Mapping[str, UserCredential]
    settings: tuple[ClusterSettings, int] | None = None  # (settings, settings_version)


@dataclass(frozen=True)
class CommitPlan:
    """The writes of version ``version``: each with the stored version it replaces (None:
    the key is absent), as the condition of its compare-and-swap."""

    version: int
    devices: tuple[tuple[DeviceEntry, int | None], ...] = ()
    credentials: tuple[tuple[UserCredential, int | None], ...] = ()
    settings: tuple[ClusterSettings, int] | None = None  # (new settings, settings_version read)
    changes: tuple[Change, ...] = ()
    dropped: tuple[str, ...] = ()  # keys stale for this version

    @property
    def written_devices(self) -> tuple[DeviceEntry, ...]:
        return tuple(entry for entry, _ in self.devices)

    @property
    def written_credentials(self) -> tuple[UserCredential, ...]:
        return tuple(credential for credential, _ in self.credentials)

    @property
    def written_settings(self) -> ClusterSettings | None:
        return self.settings[0] if self.settings is not None else None


def _check(version: int, proposal: Proposal) -> None:
    if len(proposal.devices) + len(proposal.credentials) + (proposal.settings is not None) > (
        MAX_CHANGES
    ):
        raise ValueError(f"a policy version changes at most {MAX_CHANGES} keys")
    stamped = [d.version for d in proposal.devices] + [c.version for c in proposal.credentials]
    if any(v != version for v in stamped):
        raise ValueError(f"every proposed entry must carry the version {version}")
    if len(set(proposal.device_keys)) != len(proposal.devices) or len(set(proposal.users)) != len(
        proposal.credentials
    ):
        raise ValueError("a policy version changes each key at most once")


def plan_commit(version: int, proposal: Proposal, held: Held) -> CommitPlan:
    _check(version, proposal)
    devices: list[tuple[DeviceEntry, int | None]] = []
    credentials: list[tuple[UserCredential, int | None]] = []
    changes: list[Change] = []
    dropped: list[str] = []
    for entry in proposal.devices:
        stored = held.devices.get(entry.key)
        if stored is not None and stored.version >= version:
            dropped.append(entry.key)
            continue
        devices.append((entry, stored.version if stored else None))
        old = entry_term(stored) if stored else None
        changes.append(Change(ChangeKind.DEVICE, entry.key, old, entry_term(entry)))
    for credential in proposal.credentials:
        held_credential = held.credentials.get(credential.user)
        if held_credential is not None and held_credential.version >= version:
            dropped.append(credential.user)
            continue
        credentials.append((credential, held_credential.version if held_credential else None))
        old = credential_term(held_credential) if held_credential else None
        changes.append(
            Change(ChangeKind.CREDENTIAL, credential.user, old, credential_term(credential))
        )
    settings: tuple[ClusterSettings, int] | None = None
    if proposal.settings is not None:
        if held.settings is None:
            raise ValueError("a settings change needs the stored settings")
        stored_settings, stored_version = held.settings
        if stored_version >= version:
            dropped.append(SETTINGS_KEY)
        else:
            settings = (proposal.settings, stored_version)
            changes.append(
                Change(
                    ChangeKind.SETTINGS,
                    SETTINGS_KEY,
                    settings_term(stored_settings, stored_version),
                    settings_term(proposal.settings, version),
                )
            )
    return CommitPlan(
        version=version,
        devices=tuple(devices),
        credentials=tuple(credentials),
        settings=settings,
        changes=tuple(changes),
        dropped=tuple(dropped),
    )
