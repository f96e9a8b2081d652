"""The ports of the control plane: what use cases need from storage, queues and the
WebSocket push channel, as Protocols. Adapters (``lambdas.adapters``) implement them on
AWS; tests may implement them in memory.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lambdas.domain.access import ManualOverride
    from lambdas.domain.credentials import StoredCredential
    from lambdas.domain.email_view import AccessObservation, ActivityCount, NodeSeen
    from lambdas.domain.gateway_nodes import NodeReport


class ClusterCredentialStore(Protocol):
    """Hashed gateway credentials, per cluster and key id."""

    def get_credential(self, cluster_id: str, key_id: str) -> StoredCredential | None: ...

    def list_credentials(self, cluster_id: str) -> Sequence[StoredCredential]: ...

    def add_credential(self, credential: StoredCredential) -> None:
        """Store a new key; NotFound if the cluster does not exist."""
        ...

    def revoke_credentials(
        self, cluster_id: str, at: datetime, key_id: str | None = None
    ) -> list[str]:
        """Revoke one key (or every key when ``key_id`` is None); return the key ids
        revoked now (already revoked ones are left as they were)."""
        ...


class EmailDeviceView(Protocol):
    """The dashboard's email-device rows (one per cluster that saw the device) and
    per-minute activity counters."""

    def apply_observation(self, observation: AccessObservation) -> ObservationWrite:
        """Write the row if the observation is newer than what is stored (newest wins);
        say whether it was written and what the row held before."""
        ...

    def add_activity(self, count: ActivityCount, fingerprint: str) -> bool:
        """Add one batch's counts to a minute, once per batch fingerprint."""
        ...

    def get_many(self, observation_keys: Sequence[str]) -> dict[str, AccessObservation]:
        """The rows of these observation keys (absent keys are left out)."""
        ...

    def all_rows(self) -> list[AccessObservation]:
        """Every row, newest first (O(devices): the roster's rebuild, tests and tools)."""
        ...

    def activity(self, minutes: Sequence[str]) -> dict[str, tuple[int, int]]:
        """minute -> (requests, blocks) for the minutes that have counters."""
        ...

    def join(self, keys: Sequence[str]) -> ViewJoin | None:
        """The MDM record and manual override of each email device key, in a few batch
        reads; None when this view cannot join (the caller then asks the stores one by
        one)."""
        ...


@dataclass(frozen=True)
class ObservationWrite:
    """What writing one observation did."""

    written: bool
    previous_state: str | None = None  # the row's access state before (None: no row)
    replayed: bool = False  # the row already held this very event (a redelivery)


@dataclass(frozen=True)
class MdmFacts:
    """The MDM record's facts a dashboard row shows."""

    mdm_device_id: str
    model: str
    platform: str
    os_version: str
    enrollment_state: str
    compliance_state: str


@dataclass(frozen=True)
class ViewJoin:
    """What the MDM and the admins say about a page of email devices, by view key."""

    devices: dict[str, MdmFacts]
    overrides: dict[str, ManualOverride]


class GatewayNodeStore(Protocol):
    """Each gateway node's last reported state (gateway_nodes table)."""

    def record_seen(self, seen: NodeSeen) -> None:
        """Move the node's last_seen forward (never back)."""
        ...

    def record_keepalive(self, report: NodeReport) -> None:
        """Store what a node reported in its keepalive and its digest verdict (and move
        last_seen forward). ``digest_mismatches`` is added to the stored count, and
        ``last_verified_at`` kept unless the report carries a newer one; the policy
        rejection figures are stored as reported."""
        ...

    def list_nodes(self, cluster_id: str) -> list[NodeReport]: ...


class PayloadQueue(Protocol):
    def send(self, bodies: Sequence[str]) -> None:
        """Queue message bodies (each under the SQS size limit) on the payload queue."""
        ...


# --- The write side: devices, policy entries, clusters, connections, ------------------
# --- overrides, device events, the compliance queue and the push channel. -------------

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lambdas.domain.access import ManualOverride
    from lambdas.domain.compliance import CompliancePolicy, ComplianceResult, DeviceRecord
    from lambdas.domain.mdm_events import CheckinEvent, EnrollmentEvent, UnenrollmentEvent
    from lambdas.domain.policy_commit import CommitPlan
    from lambdas.domain.policy_log import LogRecord, Watermark
    from lambdas.domain.records import ClusterRecord, Connection
    from seg_contract import DeviceEntry, UserCredential


class DeviceStore(Protocol):
    """MDM device records (devices table) and the email-device -> MDM device links."""

    def get(self, mdm_device_id: str) -> DeviceRecord | None:
        """The record, read consistently (None when unknown)."""
        ...

    def apply_enrollment(self, event: EnrollmentEvent) -> bool:
        """(Re-)enroll; return False when a newer event already shaped the record."""
        ...

    def apply_checkin(self, event: CheckinEvent) -> bool:
        """Store posture; False when stale. ``NotFound`` for an unknown device."""
        ...

    def apply_unenrollment(self, event: UnenrollmentEvent) -> bool:
        """Unenroll; False when stale. ``NotFound`` for an unknown device."""
        ...

    def set_compliance(
        self, mdm_device_id: str, result: ComplianceResult, evaluated_at: datetime
    ) -> None: ...

    def forget_retired(self, mdm_device_id: str, keys: Sequence[str]) -> None:
        """Drop retired entry keys once their BLOCK entries are written."""
        ...

    def find_by_email_device(self, user: str, device_id: str) -> str | None:
        """The MDM device id that owns an email device (normalised user, device id)."""
        ...

    def iter_stale(self, cutoff: datetime) -> Iterator[DeviceRecord]:
        """Enrolled devices whose check-in reference is before ``cutoff``."""
        ...

    def list_devices(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[DeviceRecord], str | None]:
        """A page of MDM devices and the cursor of the next page."""
        ...


class PolicyEntryStore(Protocol):
    """Per cluster: the latest versioned state of every device entry and credential.
    Written only by a version's commit (``PolicyLog.commit``); every read is consistent."""

    def get_device_entry(
        self, cluster_id: str, user: str, device_id: str
    ) -> DeviceEntry | None: ...

    def get_credential(self, cluster_id: str, user: str) -> UserCredential | None: ...

    def get_many(
        self, cluster_id: str, device_keys: Collection[str], users: Collection[str]
    ) -> tuple[dict[str, DeviceEntry], dict[str, UserCredential]]:
        """The stored entries of these keys (``entry_key``) and credentials of these
        users; absent ones are left out."""
        ...

    def list_all(self, cluster_id: str) -> tuple[list[DeviceEntry], list[UserCredential]]: ...


class PolicyLog(Protocol):
    """Per cluster and version: how each handed-out policy version was settled
    (``lambdas.domain.policy_log``), and the one transaction that commits a version."""

    def commit(self, cluster_id: str, plan: CommitPlan, at: datetime) -> None:
        """Write the plan's entries, credentials and settings, each conditional on the
        version it replaces, together with the version's log record (committed, unless
        the version is already settled) in one transaction. Raises ``VersionFenced``
        (the version was abandoned), ``CommitConflict`` (something it replaces moved:
        nothing was written) or ``NotFound`` (no such cluster, for a settings change)."""
        ...

    def read(self, cluster_id: str, after: int, upto: int) -> Iterator[LogRecord]:
        """The records of versions in (after, upto], in version order, read
        consistently and lazily (a caller that stops early reads less)."""
        ...

    def mark_pending(self, cluster_id: str, version: int, at: datetime) -> bool:
        """Record that ``version`` was seen unsettled at ``at``, unless a record exists;
        return whether it was recorded."""
        ...

    def abandon(self, cluster_id: str, version: int, at: datetime, *, fence: bool) -> bool:
        """Settle ``version`` as abandoned: a pending record only (``fence``: an advancer
        fencing a dead writer's version), or a pending or missing one (a writer giving
        its own version up). Return whether it was settled so."""
        ...


class ClusterStore(Protocol):
    """Cluster items (clusters table): version counter, committed watermark, settings;
    and the tenant-wide compliance policy."""

    def create_cluster(
        self, cluster_id: str, name: str, created_at: datetime, public_key: str = ""
    ) -> ClusterRecord:
        """Create with default settings at version 0; ``Conflict`` if it exists."""
        ...

    def get_cluster(self, cluster_id: str) -> ClusterRecord | None:
        """The cluster, read consistently."""
        ...

    def list_clusters(self) -> list[ClusterRecord]: ...

    def next_version(self, cluster_id: str) -> int:
        """Atomically take the cluster's next policy version. ``NotFound`` if none."""
        ...

    def advance_watermark(
        self, cluster_id: str, expected: int, watermark: Watermark
    ) -> ClusterRecord | None:
        """Store a new committed watermark if the stored one is still at version
        ``expected``; return the cluster as it is after the write (None: not stored)."""
        ...

    def mark_bootstrap(
        self, cluster_id: str, at: datetime, *, replacing: int | None = None
    ) -> ClusterRecord | None:
        """On an item without a committed watermark (``ClusterRecord.legacy``): record
        that its bootstrap begins at ``at``, with the counter's value in the same write;
        only if no mark is recorded (``replacing``: only if the recorded one has that
        counter). Return the cluster after the write (None: not written)."""
        ...

    def bootstrap_watermark(
        self, cluster_id: str, marked: int, watermark: Watermark
    ) -> ClusterRecord | None:
        """Store the first committed watermark of an item that still has none and
        whose bootstrap mark has the counter ``marked``, and drop the mark; return the
        cluster after the write (None: not stored)."""
        ...

    def set_public_key(self, cluster_id: str, public_key: str) -> None: ...

    def mark_seeded(self, cluster_id: str, at: datetime) -> None:
        """Record that every device was queued for evaluation into the cluster."""
        ...

    def get_compliance_policy(self) -> CompliancePolicy: ...

    def put_compliance_policy(self, policy: CompliancePolicy, updated_at: datetime) -> None: ...


class ConnectionStore(Protocol):
    """Open WebSocket connections of gateway nodes (connections table)."""

    def put(self, connection: Connection) -> None: ...

    def get(self, connection_id: str) -> Connection | None: ...

    def delete(self, connection_id: str) -> None: ...

    def list_for_cluster(self, cluster_id: str) -> list[Connection]: ...


class ConnectionPoster(Protocol):
    """The API Gateway Management API: push bytes to, or close, one connection."""

    def post(self, connection_id: str, data: bytes) -> None:
        """Raises ``ConnectionGone`` or ``PushFailed`` (lambdas.domain.errors)."""
        ...

    def disconnect(self, connection_id: str) -> None:
        """Close the connection; a connection already gone is not an error."""
        ...


class ManualOverrideStore(Protocol):
    def get(self, user: str, device_id: str) -> ManualOverride | None:
        """The stored override or its CLEAR tombstone (None when never set)."""
        ...

    def put(self, override: ManualOverride) -> bool:
        """Store unless a newer request is stored already; return whether stored."""
        ...

    def list_page(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[ManualOverride], str | None]:
        """A page of stored overrides (tombstones included) and the next cursor."""
        ...


@dataclass(frozen=True)
class StoredDeviceEvent:
    event_id: str
    received_at: str  # format_instant()
    body: str  # the event as received (JSON)


class DeviceEventLog(Protocol):
    """Device Services events received (device_events table): idempotency and audit."""

    def exists(self, event_id: str) -> bool: ...

    def record(
        self, event_id: str, body: str, received_at: datetime, mdm_device_id: str = ""
    ) -> bool:
        """Record once; False when the event id was recorded already."""
        ...

    def for_device(self, mdm_device_id: str, limit: int) -> list[StoredDeviceEvent]:
        """One MDM device's events, newest first."""
        ...


class ComplianceQueue(Protocol):
    def send(self, body: str, group_id: str, dedup_id: str) -> None:
        """Queue one message on the compliance FIFO queue."""
        ...


class JwksSource(Protocol):
    """Token issuers' published key sets (``lambdas.usecases.token_issuers``)."""

    def fetch(self, uri: str) -> dict[str, Any]:
        """The JSON document at ``uri``; raises ``lambdas.domain.errors.JwksUnavailable``."""
        ...


# --- The console (roster, history, audit, notes, notices) ------------------------------

if TYPE_CHECKING:
    from lambdas.domain.access_history import HistoryEvent
    from lambdas.domain.audit import AuditEvent
    from lambdas.domain.notices import NoticeMarker, NoticeSettings


@dataclass(frozen=True)
class JournalEntry:
    seq: str  # format_instant() of the write, and a random suffix: sorts by time
    kind: str  # "obs" (observations, merged newest-wins) | "keys" (joins to re-read)
    data: bytes


class RosterJournal(Protocol):
    """Changes to the roster since its last snapshot, kept for ``JOURNAL_TTL``. Entries
    are stamped with the journal's own clock (wall time), whatever time the request
    that caused them works with."""

    def now(self) -> datetime:
        """The journal's clock."""
        ...

    def append(self, kind: str, data: bytes) -> None: ...

    def read_since(self, since: datetime) -> list[JournalEntry]:
        """Every entry written at or after ``since`` (by the journal's clock), in seq
        order, read consistently."""
        ...


@dataclass(frozen=True)
class SnapshotHead:
    generation: str  # the chunks' id
    epoch: str  # changes when a snapshot does not extend the previous one (a rebuild)
    watermark: str  # format_instant(): the journal before it is folded in
    chunks: int
    rows: int
    written_at: str
    checksum: int = 0  # zlib.crc32 of the bytes: a torn read is detected


class RosterSnapshots(Protocol):
    def head(self) -> SnapshotHead | None:
        """The published snapshot (None: none yet)."""
        ...

    def read(self, head: SnapshotHead) -> bytes | None:
        """Its bytes (None: replaced and deleted meanwhile; read the head again)."""
        ...

    def publish(
        self, data: bytes, *, epoch: str, watermark: str, rows: int, now: datetime
    ) -> SnapshotHead:
        """Store the bytes, make them the published snapshot, delete the previous one."""
        ...


class AccessHistoryStore(Protocol):
    """The last access events of each (cluster, email device), bounded in count."""

    def add(self, observation_key: str, events: Sequence[HistoryEvent], now: datetime) -> None:
        """Merge events in (idempotent by event id), keeping the newest."""
        ...

    def get_many(self, observation_keys: Sequence[str]) -> dict[str, list[HistoryEvent]]: ...


class AuditLog(Protocol):
    """The append-only audit trail."""

    def append(self, event: AuditEvent) -> None: ...

    def read_month(
        self, month: str, *, before_seq: str | None, limit: int
    ) -> tuple[list[AuditEvent], bool]:
        """A month's records newest first, before ``before_seq``; and whether more follow."""
        ...


@dataclass(frozen=True)
class DeviceNote:
    email_device_key: str
    text: str
    author: str
    updated_at: str  # format_instant()


class DeviceNoteStore(Protocol):
    def get(self, email_device_key: str) -> DeviceNote | None: ...

    def put(self, note: DeviceNote) -> None:
        """Store (an empty text removes the note)."""
        ...


class NoticeStore(Protocol):
    """Notice settings and the per-device markers that keep notices to one per change."""

    def settings(self) -> NoticeSettings: ...

    def put_settings(self, settings: NoticeSettings) -> None: ...

    def claim(self, marker: NoticeMarker) -> bool:
        """Record that the device entered ``marker.state``. True when this is a change
        of the device's state (or the same change, not yet sent): send a notice."""
        ...

    def release(self, email_device_key: str, observed_at: str) -> None:
        """The device was seen allowed at ``observed_at``: a later block notifies again."""
        ...

    def marker(self, email_device_key: str) -> NoticeMarker | None: ...

    def set_outcome(
        self, email_device_key: str, edge_id: str, *, expect: str, outcome: str, at: str
    ) -> bool:
        """Move the change's outcome from ``expect`` to ``outcome`` ("" -> "sending" ->
        "sent"); False when the marker no longer holds that change in that outcome."""
        ...


class NoticeQueue(Protocol):
    def send(self, body: str) -> None: ...


class Mailer(Protocol):
    def send(self, *, sender: str, to: str, subject: str, body: str) -> str:
        """Send a plain-text e-mail; return the provider's message id."""


# --- Signed policy: the KMS signing keys and their registry ---------------------------

if TYPE_CHECKING:
    from lambdas.domain.signing_keys import KeyRegistry


class PolicySigner(Protocol):
    """One asymmetric signing key (ECC NIST P-256): satisfies ``seg_contract.signing
    .Signer``, so every signer shares ``seg_contract.signing.issue``."""

    @property
    def key_arn(self) -> str: ...

    @property
    def kid(self) -> str:
        """The key id: the fingerprint of ``public_key_der`` (``seg_contract.signing``)."""
        ...

    @property
    def public_key_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo (read once per warm container)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """DER ECDSA P-256 / SHA-256 signature of ``message`` (a statement, at most
        4096 bytes); ``SigningUnavailable`` when the key cannot sign."""
        ...


class PolicySigners(Protocol):
    """The signer of each of the stack's signing keys, by key ARN."""

    def signer(self, key_arn: str) -> PolicySigner:
        """``SigningUnavailable`` when the key cannot be read or is not ECC P-256."""
        ...


class SigningKeyStore(Protocol):
    """The registry of signing keys (one item of the clusters table)."""

    def get_registry(self) -> KeyRegistry:
        """The stored registry (generation 0 and no keys when never written)."""
        ...

    def put_registry(self, registry: KeyRegistry, expected_generation: int) -> None:
        """Store ``registry`` if the stored one is at ``expected_generation`` (0: none
        stored yet); ``Conflict`` when another change got there first."""
        ...
