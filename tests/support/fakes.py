"""In-memory fakes of the control plane's policy ports, with the DynamoDB adapters'
semantics (the same contract tests run against both:
``tests/integration/control_write/test_policy_ports_contract.py``).

One ``MemoryPolicyState`` holds clusters, entries and the policy log behind one lock, so
that ``MemoryPolicyLog.commit`` is one atomic step over all three (DynamoDB's
TransactWriteItems), and the fakes are safe to drive from threads.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from lambdas.domain.compliance import CompliancePolicy
from lambdas.domain.credentials import StoredCredential
from lambdas.domain.email_view import NodeSeen
from lambdas.domain.errors import (
    CommitConflict,
    Conflict,
    ConnectionGone,
    NotFound,
    PushFailed,
    VersionFenced,
)
from lambdas.domain.gateway_nodes import NodeReport
from lambdas.domain.policy_bootstrap import BootstrapMark
from lambdas.domain.policy_commit import CommitPlan
from lambdas.domain.policy_log import LogRecord, LogState, Watermark, initial_watermark
from lambdas.domain.records import ClusterRecord, Connection
from lambdas.domain.signing_keys import KeyRegistry
from lambdas.usecases.policy_signing import PolicySigning
from seg_contract import ClusterSettings, DeviceEntry, UserCredential, entry_key
from seg_contract.signing import LocalSigner


@dataclass
class MemoryPolicyState:
    clusters: dict[str, ClusterRecord] = field(default_factory=dict)
    devices: dict[tuple[str, str], DeviceEntry] = field(default_factory=dict)
    credentials: dict[tuple[str, str], UserCredential] = field(default_factory=dict)
    log: dict[tuple[str, int], LogRecord] = field(default_factory=dict)
    # Everything ever committed, in commit order: (cluster, entry | credential | settings
    # with their version), so tests can rebuild the policy as of any version.
    history: list[tuple[str, DeviceEntry | UserCredential | tuple[ClusterSettings, int]]] = field(
        default_factory=list
    )
    compliance_policy: CompliancePolicy = field(default_factory=CompliancePolicy)
    lock: threading.RLock = field(default_factory=threading.RLock)


class MemoryClusters:
    def __init__(self, state: MemoryPolicyState) -> None:
        self.state = state

    def create_cluster(
        self, cluster_id: str, name: str, created_at: datetime, public_key: str = ""
    ) -> ClusterRecord:
        with self.state.lock:
            if cluster_id in self.state.clusters:
                raise Conflict(f"cluster {cluster_id} already exists")
            record = ClusterRecord(
                cluster_id=cluster_id,
                name=name,
                created_at=created_at,
                policy_version=0,
                settings=ClusterSettings(),
                settings_version=0,
                watermark=initial_watermark(ClusterSettings()),
                public_key=public_key,
            )
            self.state.clusters[cluster_id] = record
            return record

    def get_cluster(self, cluster_id: str) -> ClusterRecord | None:
        with self.state.lock:
            return self.state.clusters.get(cluster_id)

    def list_clusters(self) -> list[ClusterRecord]:
        with self.state.lock:
            return sorted(self.state.clusters.values(), key=lambda c: c.cluster_id)

    def _require(self, cluster_id: str) -> ClusterRecord:
        found = self.state.clusters.get(cluster_id)
        if found is None:
            raise NotFound(f"cluster {cluster_id} not found")
        return found

    def next_version(self, cluster_id: str) -> int:
        with self.state.lock:
            cluster = self._require(cluster_id)
            self.state.clusters[cluster_id] = replace(
                cluster, policy_version=cluster.policy_version + 1
            )
            return cluster.policy_version + 1

    def advance_watermark(
        self, cluster_id: str, expected: int, watermark: Watermark
    ) -> ClusterRecord | None:
        with self.state.lock:
            cluster = self.state.clusters.get(cluster_id)
            if cluster is None or cluster.legacy or cluster.watermark.version != expected:
                return None
            moved = replace(cluster, watermark=watermark)
            self.state.clusters[cluster_id] = moved
            return moved

    def put_legacy(
        self,
        cluster_id: str,
        *,
        counter: int,
        settings: ClusterSettings | None = None,
        settings_version: int = 0,
    ) -> ClusterRecord:
        """A cluster item as written before committed versions (tests: upgrades)."""
        settings = settings or ClusterSettings()
        record = ClusterRecord(
            cluster_id=cluster_id,
            name=cluster_id,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            policy_version=counter,
            settings=settings,
            settings_version=settings_version,
            watermark=initial_watermark(settings),
            legacy=True,
        )
        with self.state.lock:
            self.state.clusters[cluster_id] = record
        return record

    def mark_bootstrap(
        self, cluster_id: str, at: datetime, *, replacing: int | None = None
    ) -> ClusterRecord | None:
        with self.state.lock:
            cluster = self.state.clusters.get(cluster_id)
            if cluster is None or not cluster.legacy:
                return None
            held = cluster.bootstrap.counter if cluster.bootstrap else None
            if held != replacing:
                return None
            marked = replace(cluster, bootstrap=BootstrapMark(cluster.policy_version, at))
            self.state.clusters[cluster_id] = marked
            return marked

    def bootstrap_watermark(
        self, cluster_id: str, marked: int, watermark: Watermark
    ) -> ClusterRecord | None:
        with self.state.lock:
            cluster = self.state.clusters.get(cluster_id)
            if cluster is None or not cluster.legacy or cluster.bootstrap is None:
                return None
            if cluster.bootstrap.counter != marked:
                return None
            done = replace(cluster, watermark=watermark, legacy=False, bootstrap=None)
            self.state.clusters[cluster_id] = done
            return done

    def set_public_key(self, cluster_id: str, public_key: str) -> None:
        with self.state.lock:
            cluster = self._require(cluster_id)
            self.state.clusters[cluster_id] = replace(cluster, public_key=public_key)

    def mark_seeded(self, cluster_id: str, at: datetime) -> None:
        with self.state.lock:
            cluster = self._require(cluster_id)
            if cluster.seeded_at is None:
                self.state.clusters[cluster_id] = replace(cluster, seeded_at=at)

    def get_compliance_policy(self) -> CompliancePolicy:
        return self.state.compliance_policy

    def put_compliance_policy(self, policy: CompliancePolicy, updated_at: datetime) -> None:
        self.state.compliance_policy = policy


class MemoryEntries:
    def __init__(self, state: MemoryPolicyState) -> None:
        self.state = state

    def get_device_entry(self, cluster_id: str, user: str, device_id: str) -> DeviceEntry | None:
        with self.state.lock:
            return self.state.devices.get((cluster_id, entry_key(user, device_id)))

    def get_credential(self, cluster_id: str, user: str) -> UserCredential | None:
        with self.state.lock:
            return self.state.credentials.get((cluster_id, user))

    def get_many(
        self, cluster_id: str, device_keys: Collection[str], users: Collection[str]
    ) -> tuple[dict[str, DeviceEntry], dict[str, UserCredential]]:
        with self.state.lock:
            devices = {
                k: self.state.devices[(cluster_id, k)]
                for k in device_keys
                if (cluster_id, k) in self.state.devices
            }
            credentials = {
                u: self.state.credentials[(cluster_id, u)]
                for u in users
                if (cluster_id, u) in self.state.credentials
            }
            return devices, credentials

    def list_all(self, cluster_id: str) -> tuple[list[DeviceEntry], list[UserCredential]]:
        with self.state.lock:
            return (
                [e for (c, _), e in self.state.devices.items() if c == cluster_id],
                [e for (c, _), e in self.state.credentials.items() if c == cluster_id],
            )


class MemoryPolicyLog:
    def __init__(self, state: MemoryPolicyState) -> None:
        self.state = state

    def commit(self, cluster_id: str, plan: CommitPlan, at: datetime) -> None:
        state = self.state
        with state.lock:
            held = state.log.get((cluster_id, plan.version))
            if held is not None and held.state is not LogState.PENDING:
                raise VersionFenced(cluster_id, plan.version)
            for entry, expected in plan.devices:
                stored = state.devices.get((cluster_id, entry.key))
                if (stored.version if stored else None) != expected:
                    raise CommitConflict(entry.key)
            for credential, expected in plan.credentials:
                stored_credential = state.credentials.get((cluster_id, credential.user))
                if (stored_credential.version if stored_credential else None) != expected:
                    raise CommitConflict(credential.user)
            cluster = state.clusters.get(cluster_id)
            if plan.settings is not None:
                if cluster is None:
                    raise NotFound(f"cluster {cluster_id} not found")
                if cluster.settings_version != plan.settings[1]:
                    raise CommitConflict("settings")
            state.log[(cluster_id, plan.version)] = LogRecord(
                plan.version, LogState.COMMITTED, plan.changes
            )
            for entry, _ in plan.devices:
                state.devices[(cluster_id, entry.key)] = entry
                state.history.append((cluster_id, entry))
            for credential, _ in plan.credentials:
                state.credentials[(cluster_id, credential.user)] = credential
                state.history.append((cluster_id, credential))
            if plan.settings is not None and cluster is not None:
                state.clusters[cluster_id] = replace(
                    cluster, settings=plan.settings[0], settings_version=plan.version
                )
                state.history.append((cluster_id, (plan.settings[0], plan.version)))

    def read(self, cluster_id: str, after: int, upto: int) -> Iterator[LogRecord]:
        with self.state.lock:
            found = sorted(
                (
                    r
                    for (c, v), r in self.state.log.items()
                    if c == cluster_id and after < v <= upto
                ),
                key=lambda r: r.version,
            )
        return iter(found)

    def mark_pending(self, cluster_id: str, version: int, at: datetime) -> bool:
        with self.state.lock:
            if (cluster_id, version) in self.state.log:
                return False
            self.state.log[(cluster_id, version)] = LogRecord(
                version, LogState.PENDING, first_seen=at
            )
            return True

    def abandon(self, cluster_id: str, version: int, at: datetime, *, fence: bool) -> bool:
        with self.state.lock:
            held = self.state.log.get((cluster_id, version))
            unsettled = held is not None and held.state is LogState.PENDING
            if not (unsettled or (held is None and not fence)):
                return False
            self.state.log[(cluster_id, version)] = LogRecord(version, LogState.ABANDONED)
            return True


class MemoryConnections:
    def __init__(self) -> None:
        self.items: dict[str, Connection] = {}
        self.lock = threading.Lock()

    def put(self, connection: Connection) -> None:
        with self.lock:
            self.items[connection.connection_id] = connection

    def get(self, connection_id: str) -> Connection | None:
        with self.lock:
            return self.items.get(connection_id)

    def delete(self, connection_id: str) -> None:
        with self.lock:
            self.items.pop(connection_id, None)

    def list_for_cluster(self, cluster_id: str) -> list[Connection]:
        with self.lock:
            found = [c for c in self.items.values() if c.cluster_id == cluster_id]
        return sorted(found, key=lambda c: (c.node_id, c.connection_id))


class MemoryPoster:
    """Records every post per connection, in order; ``gone`` and ``failing`` connections
    raise what API Gateway's management API would."""

    def __init__(self) -> None:
        self.posted: dict[str, list[bytes]] = {}
        self.closed: list[str] = []
        self.gone: set[str] = set()
        self.failing: set[str] = set()
        self.lock = threading.Lock()

    def post(self, connection_id: str, data: bytes) -> None:
        if connection_id in self.gone:
            raise ConnectionGone(connection_id)
        if connection_id in self.failing:
            raise PushFailed(f"throttled posting to {connection_id}")
        with self.lock:
            self.posted.setdefault(connection_id, []).append(data)

    def disconnect(self, connection_id: str) -> None:
        with self.lock:
            self.closed.append(connection_id)

    def take(self, connection_id: str) -> list[bytes]:
        """Remove and return what was posted to a connection so far."""
        with self.lock:
            return self.posted.pop(connection_id, [])


class MemoryCredentials:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], StoredCredential] = {}

    def get_credential(self, cluster_id: str, key_id: str) -> StoredCredential | None:
        return self.items.get((cluster_id, key_id))

    def list_credentials(self, cluster_id: str) -> list[StoredCredential]:
        return [c for (cid, _), c in sorted(self.items.items()) if cid == cluster_id]

    def add_credential(self, credential: StoredCredential) -> None:
        self.items[(credential.cluster_id, credential.key_id)] = credential

    def revoke_credentials(
        self, cluster_id: str, at: datetime, key_id: str | None = None
    ) -> list[str]:
        revoked = []
        for (cid, kid), stored in sorted(self.items.items()):
            if cid == cluster_id and (key_id is None or kid == key_id) and not stored.revoked:
                self.items[(cid, kid)] = replace(stored, revoked_at=at)
                revoked.append(kid)
        return revoked


class MemoryGatewayNodes:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], NodeReport] = {}

    def record_seen(self, seen: NodeSeen) -> None:
        key = (seen.cluster_id, seen.node_id)
        held = self.items.get(key) or NodeReport(seen.cluster_id, seen.node_id, last_seen="")
        self.items[key] = replace(held, last_seen=max(held.last_seen, seen.last_seen))

    def record_keepalive(self, report: NodeReport) -> None:
        held = self.items.get((report.cluster_id, report.node_id))
        if held is not None and held.reported_at >= report.reported_at:
            return  # a newer keepalive is stored already
        mismatches = (held.digest_mismatches if held else 0) + report.digest_mismatches
        verified = report.last_verified_at or (held.last_verified_at if held else "")
        self.items[(report.cluster_id, report.node_id)] = replace(
            report, digest_mismatches=mismatches, last_verified_at=verified
        )

    def list_nodes(self, cluster_id: str) -> list[NodeReport]:
        return [r for (cid, _), r in sorted(self.items.items()) if cid == cluster_id]


# --- policy signing -----------------------------------------------------------------------

ARN_1 = "arn:aws:kms:us-east-1:123456789012:key/one"


class FakeSigner:
    """A ``PolicySigner`` on a local key, counting signatures (as KMS requests)."""

    def __init__(self, key_arn: str) -> None:
        self.key_arn = key_arn
        self._local = LocalSigner.generate()
        self.kid = self._local.kid
        self.public_key_der = self._local.public.spki_der
        self.public = self._local.public
        self.signed = 0

    def sign(self, message: bytes) -> bytes:
        self.signed += 1
        return self._local.sign(message)


class FakeSigners:
    def __init__(self, *arns: str) -> None:
        self.by_arn = {arn: FakeSigner(arn) for arn in arns}

    def signer(self, key_arn: str) -> FakeSigner:
        return self.by_arn[key_arn]


class MemoryKeyStore:
    """The registry in memory, with the adapter's optimistic concurrency."""

    def __init__(self) -> None:
        self.registry = KeyRegistry()
        self.reads = 0

    def get_registry(self) -> KeyRegistry:
        self.reads += 1
        return self.registry

    def put_registry(self, registry: KeyRegistry, expected_generation: int) -> None:
        if self.registry.generation != expected_generation:
            raise Conflict("the signing keys changed meanwhile")
        self.registry = registry


def local_signing(*arns: str) -> tuple[PolicySigning, FakeSigners]:
    """A ``PolicySigning`` on local keys (the first one active), and its signers (whose
    ``public`` keys a node pins)."""
    arns = arns or (ARN_1,)
    signers = FakeSigners(*arns)
    return PolicySigning(signers, MemoryKeyStore(), arns), signers
