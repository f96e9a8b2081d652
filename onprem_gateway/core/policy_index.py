"""The gateway's policy cache as an immutable, lookup-optimised index.

A ``PolicyIndex`` is built from a ``seg_contract.PolicySnapshot`` and never changes; every
transition (``apply_snapshot``, ``apply_delta``, ``apply_push``, ``with_confirmation``)
returns a new index, so the data path swaps one reference and readers never see a
half-applied policy.

Versioning follows the theory of operation in ``seg_contract.models`` exactly:

- entries (device entries, user credentials) apply **per key, newest version wins**: a
  change whose version is not greater than the one held for that key changes nothing,
  so duplicates, replays and out-of-order pushes are harmless;
- ``version`` is the *applied version*: every change up to it has been applied. A push
  with version ``applied + 1`` advances it; a push beyond that reveals a gap
  (``ApplyResult.gap``): it is still applied per key, but ``version`` stays where it is
  until the versions in between arrive (by push or by the delta the caller fetches since
  ``index.version``), so the index never claims more than it holds;
- a snapshot or a delta advances ``version`` to at least its own version and keeps
  entries applied from pushes that are newer than it.

Lookups are O(1) dict gets. A push touches a small overlay instead of copying a
100,000-entry dict; the overlay is folded into the base once it grows past
``_OVERLAY_LIMIT`` (one copy per few hundred pushes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from onprem_gateway.core.rule_set import CompiledRule, RuleSet
from seg_contract import (
    ClusterSettings,
    DeviceEntry,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushMessage,
    PushPong,
    PushResync,
    UserCredential,
    normalize_device_id,
    normalize_user,
)

# Pushes applied since the last fold before the overlay is merged into the base dict.
# Folding 100k entries costs a few ms; 512 pushes between folds keeps the amortised cost
# per push in microseconds while a lookup costs at most two dict gets.
_OVERLAY_LIMIT = 512

K = TypeVar("K")
V = TypeVar("V", DeviceEntry, UserCredential)


class PolicyMismatchError(ValueError):
    """A snapshot, delta or push that cannot be applied to this index (another cluster,
    or a delta that does not start at or before the applied version)."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    """What an index derives from its settings once, shared by every index with the same
    settings: the rule set (with its memo) and the normalised blocked users."""

    rule_set: RuleSet
    blocked_users: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What ``apply_push`` did. ``gap``: the push revealed missing versions, fetch a delta
    since ``index.version``. ``changed``: the index differs from the one it was applied
    to (the caller persists and swaps only then)."""

    index: PolicyIndex
    changed: bool
    gap: bool


class _Layered(Generic[K, V]):
    """A read-only mapping made of a large base dict and a small overlay (newer)."""

    __slots__ = ("_base", "_overlay")

    def __init__(self, base: dict[K, V], overlay: dict[K, V] | None = None) -> None:
        self._base: dict[K, V] = base
        self._overlay: dict[K, V] = overlay or {}

    def get(self, key: K) -> V | None:
        if self._overlay:
            found = self._overlay.get(key)
            if found is not None:
                return found
        return self._base.get(key)

    def with_changes(self, changes: Mapping[K, V]) -> _Layered[K, V]:
        if not changes:
            return self
        overlay = {**self._overlay, **changes}
        if len(overlay) > _OVERLAY_LIMIT:
            return _Layered({**self._base, **overlay})
        return _Layered(self._base, overlay)

    def items(self) -> Iterator[tuple[K, V]]:
        overlay = self._overlay
        for key, value in self._base.items():
            if key not in overlay:
                yield key, value
        yield from overlay.items()

    def values(self) -> Iterator[V]:
        for _, value in self.items():
            yield value

    def __len__(self) -> int:
        overlay = self._overlay
        return len(self._base) + sum(1 for key in overlay if key not in self._base)


def _newer(changes: Iterable[tuple[K, V]], held: _Layered[K, V]) -> dict[K, V]:
    """The changes whose version beats what ``held`` has for the same key (and the
    newest of several changes for one key)."""
    out: dict[K, V] = {}
    for key, value in changes:
        current = out.get(key) or held.get(key)
        if current is None or value.version > current.version:
            out[key] = value
    return out


def _entry_items(entries: Iterable[DeviceEntry]) -> Iterator[tuple[tuple[str, str], DeviceEntry]]:
    for entry in entries:
        yield (normalize_user(entry.user), normalize_device_id(entry.device_id)), entry


def _credential_items(creds: Iterable[UserCredential]) -> Iterator[tuple[str, UserCredential]]:
    for cred in creds:
        yield normalize_user(cred.user), cred


class PolicyIndex:
    """One cluster's policy, ready for per-request lookups. Immutable."""

    __slots__ = (
        "_ahead",
        "_credentials",
        "_entries",
        "_rule_set",
        "_settings_version",
        "blocked_users",
        "cluster_id",
        "confirmed_at",
        "generated_at",
        "loaded",
        "rules",
        "settings",
        "version",
    )

    cluster_id: str
    version: int
    confirmed_at: float
    settings: ClusterSettings
    blocked_users: frozenset[str]
    rules: tuple[CompiledRule, ...]
    loaded: bool
    generated_at: datetime
    _entries: _Layered[tuple[str, str], DeviceEntry]
    _credentials: _Layered[str, UserCredential]
    _settings_version: int
    _ahead: frozenset[int]
    _rule_set: RuleSet

    def __init__(
        self,
        *,
        cluster_id: str,
        version: int,
        confirmed_at: float,
        settings: ClusterSettings,
        entries: _Layered[tuple[str, str], DeviceEntry],
        credentials: _Layered[str, UserCredential],
        settings_version: int,
        loaded: bool,
        generated_at: datetime,
        ahead: frozenset[int] = frozenset(),
        compiled: _Compiled | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.version = version
        self.confirmed_at = confirmed_at
        self.settings = settings
        self._entries = entries
        self._credentials = credentials
        self._settings_version = settings_version
        self.loaded = loaded
        self.generated_at = generated_at
        self._ahead = ahead
        if compiled is None:
            compiled = _Compiled(
                RuleSet(settings.rules),
                frozenset(normalize_user(user) for user in settings.blocked_users),
            )
        self._rule_set = compiled.rule_set
        self.rules = compiled.rule_set.rules
        self.blocked_users = compiled.blocked_users

    # --- construction -----------------------------------------------------------------

    @classmethod
    def empty(cls, cluster_id: str = "") -> PolicyIndex:
        """A node that has no policy yet (``loaded`` is False: decide fails closed)."""
        return cls(
            cluster_id=cluster_id,
            version=0,
            confirmed_at=0.0,
            settings=ClusterSettings(),
            entries=_Layered({}),
            credentials=_Layered({}),
            settings_version=0,
            loaded=False,
            generated_at=datetime.fromtimestamp(0, UTC),
        )

    @classmethod
    def from_snapshot(cls, snap: PolicySnapshot, confirmed_at: float) -> PolicyIndex:
        """Build an index from a full snapshot; ``confirmed_at`` is when the control plane
        (or, for a policy loaded from disk, the last contact it records) vouched for it."""
        entries: dict[tuple[str, str], DeviceEntry] = {}
        for key, entry in _entry_items(snap.devices):
            held = entries.get(key)
            if held is None or entry.version > held.version:
                entries[key] = entry
        credentials: dict[str, UserCredential] = {}
        for user, cred in _credential_items(snap.credentials):
            held_cred = credentials.get(user)
            if held_cred is None or cred.version > held_cred.version:
                credentials[user] = cred
        return cls(
            cluster_id=snap.cluster_id,
            version=snap.version,
            confirmed_at=confirmed_at,
            settings=snap.settings,
            entries=_Layered(entries),
            credentials=_Layered(credentials),
            settings_version=snap.settings_version,
            loaded=True,
            generated_at=snap.generated_at,
        )

    # --- lookups (the request path) ---------------------------------------------------

    def entry(self, user: str, device_id: str) -> DeviceEntry | None:
        """The entry for a normalised (user, device id), or None."""
        return self._entries.get((user, device_id))

    def credential(self, user: str) -> UserCredential | None:
        """The credential-substitution record of a normalised user, or None."""
        return self._credentials.get(user)

    def first_rule(
        self, *, device_type: str, model: str, os: str, user_agent: str
    ) -> CompiledRule | None:
        """The first cluster rule (in list order) that matches these facts, or None
        (memoised per (field, value): ``core.rule_set``)."""
        return self._rule_set.first_match(
            device_type=device_type, model=model, os=os, user_agent=user_agent
        )

    def device_count(self) -> int:
        return len(self._entries)

    def devices(self) -> Iterator[DeviceEntry]:
        return self._entries.values()

    def credentials(self) -> Iterator[UserCredential]:
        return self._credentials.values()

    # --- transitions ------------------------------------------------------------------

    def with_confirmation(self, confirmed_at: float) -> PolicyIndex:
        """The same policy, vouched for by the control plane at ``confirmed_at``."""
        return self._replace(confirmed_at=max(confirmed_at, self.confirmed_at))

    def apply_snapshot(self, snap: PolicySnapshot, confirmed_at: float) -> PolicyIndex:
        """Replace this policy with a full snapshot, keeping what pushes brought in that
        is newer than the snapshot (a push may overtake the snapshot request)."""
        self._check_cluster(snap.cluster_id)
        fresh = PolicyIndex.from_snapshot(snap, confirmed_at)
        if not self.loaded:
            return fresh
        # Keys are already normalised here: no need to normalise 100,000 entries again.
        newer_entries = {
            key: entry for key, entry in self._entries.items() if entry.version > snap.version
        }
        newer_creds = {
            user: cred for user, cred in self._credentials.items() if cred.version > snap.version
        }
        keep_settings = self._settings_version > snap.settings_version
        version = max(self.version, snap.version)
        return PolicyIndex(
            cluster_id=snap.cluster_id,
            version=version,
            confirmed_at=max(confirmed_at, self.confirmed_at),
            settings=self.settings if keep_settings else snap.settings,
            entries=fresh._entries.with_changes(_newer(newer_entries.items(), fresh._entries)),
            credentials=fresh._credentials.with_changes(
                _newer(newer_creds.items(), fresh._credentials)
            ),
            settings_version=max(self._settings_version, snap.settings_version),
            loaded=True,
            generated_at=snap.generated_at,
            ahead=frozenset(v for v in self._ahead if v > version),
        )

    def apply_delta(self, delta: PolicyDelta, confirmed_at: float) -> PolicyIndex:
        """Apply the changes after ``delta.since_version``. The delta must start at or
        before the applied version, or changes in between would be silently missing."""
        self._check_cluster(delta.cluster_id)
        if not self.loaded:
            raise PolicyMismatchError("a delta needs a loaded policy; fetch the snapshot")
        if delta.since_version > self.version:
            raise PolicyMismatchError(
                f"delta since {delta.since_version} does not cover applied version "
                f"{self.version}; fetch the snapshot"
            )
        entries = self._entries.with_changes(_newer(_entry_items(delta.devices), self._entries))
        credentials = self._credentials.with_changes(
            _newer(_credential_items(delta.credentials), self._credentials)
        )
        settings, settings_version = self.settings, self._settings_version
        if delta.settings is not None and delta.settings_version > settings_version:
            settings, settings_version = delta.settings, delta.settings_version
        version = max(self.version, delta.version)
        version, ahead = _advance(version, self._ahead)
        return self._replace(
            version=version,
            confirmed_at=max(confirmed_at, self.confirmed_at),
            settings=settings,
            settings_version=settings_version,
            entries=entries,
            credentials=credentials,
            ahead=ahead,
            generated_at=delta.generated_at,
        )

    def apply_push(self, msg: PushMessage, confirmed_at: float | None = None) -> ApplyResult:
        """Apply one WebSocket push. ``resync`` and a ``pong`` ahead of the applied
        version report a gap (fetch a delta); ``revoked`` changes nothing here (the
        agent stops reconnecting)."""
        cluster_id = getattr(msg, "cluster_id", "")
        self._check_cluster(cluster_id)
        base = self if confirmed_at is None else self.with_confirmation(confirmed_at)
        if isinstance(msg, PushPong | PushResync):
            return ApplyResult(base, base is not self, msg.version > self.version)
        if not isinstance(msg, PushChange):
            return ApplyResult(base, base is not self, False)
        if not self.loaded:
            # Nothing to apply onto: the caller must fetch a snapshot first.
            return ApplyResult(base, base is not self, True)
        version = msg.version
        gap = version > self.version + 1
        changed = False
        entries, credentials = base._entries, base._credentials
        settings, settings_version = base.settings, base._settings_version
        changes = _newer(_entry_items(msg.devices), entries)
        entries = entries.with_changes(changes)
        cred_changes = _newer(_credential_items(msg.credentials), credentials)
        credentials = credentials.with_changes(cred_changes)
        changed = bool(changes or cred_changes)
        if msg.settings is not None and version > settings_version:
            settings, settings_version, changed = msg.settings, version, True
        applied, ahead = base.version, base._ahead
        if version == applied + 1:
            applied, ahead = _advance(version, ahead)
        elif version > applied + 1:
            ahead = ahead | {version}
        if not changed and applied == base.version and ahead == base._ahead:
            return ApplyResult(base, base is not self, gap)
        index = base._replace(
            version=applied,
            entries=entries,
            credentials=credentials,
            settings=settings,
            settings_version=settings_version,
            ahead=ahead,
        )
        return ApplyResult(index, True, gap)

    def to_snapshot(self) -> PolicySnapshot:
        """The index as a snapshot, for the last-known-good file. ``generated_at`` is set
        to the confirmation time, so ``from_snapshot(s, s.generated_at.timestamp())``
        restores the policy's age as well as its content."""
        return PolicySnapshot(
            cluster_id=self.cluster_id,
            version=self.version,
            generated_at=datetime.fromtimestamp(self.confirmed_at, UTC),
            settings=self.settings,
            settings_version=self._settings_version,
            devices=tuple(sorted(self._entries.values(), key=lambda e: (e.user, e.device_id))),
            credentials=tuple(sorted(self._credentials.values(), key=lambda c: c.user)),
        )

    # --- internals --------------------------------------------------------------------

    def _check_cluster(self, cluster_id: str) -> None:
        if self.cluster_id and cluster_id != self.cluster_id:
            raise PolicyMismatchError(
                f"policy for cluster {cluster_id!r} offered to cluster {self.cluster_id!r}"
            )

    def _replace(
        self,
        *,
        version: int | None = None,
        confirmed_at: float | None = None,
        settings: ClusterSettings | None = None,
        settings_version: int | None = None,
        entries: _Layered[tuple[str, str], DeviceEntry] | None = None,
        credentials: _Layered[str, UserCredential] | None = None,
        ahead: frozenset[int] | None = None,
        generated_at: datetime | None = None,
    ) -> PolicyIndex:
        new_settings = self.settings if settings is None else settings
        return PolicyIndex(
            cluster_id=self.cluster_id,
            version=self.version if version is None else version,
            confirmed_at=self.confirmed_at if confirmed_at is None else confirmed_at,
            settings=new_settings,
            entries=self._entries if entries is None else entries,
            credentials=self._credentials if credentials is None else credentials,
            settings_version=(
                self._settings_version if settings_version is None else settings_version
            ),
            loaded=self.loaded,
            generated_at=self.generated_at if generated_at is None else generated_at,
            ahead=self._ahead if ahead is None else ahead,
            compiled=(
                _Compiled(self._rule_set, self.blocked_users)
                if new_settings is self.settings
                else None
            ),
        )

    def __repr__(self) -> str:
        return (
            f"PolicyIndex(cluster_id={self.cluster_id!r}, version={self.version}, "
            f"devices={len(self._entries)}, loaded={self.loaded})"
        )


def _advance(version: int, ahead: frozenset[int]) -> tuple[int, frozenset[int]]:
    """Advance the applied version over versions already applied out of order."""
    while version + 1 in ahead:
        version += 1
    return version, frozenset(v for v in ahead if v > version)
