"""Small builders shared by the agent's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from onprem_gateway.agent.policy_trust import PolicyTrust
from seg_contract import (
    Access,
    AccessEvent,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushMessage,
    PushRevoked,
)
from seg_contract.signing import Kind, LocalSigner, SignedPayload, issue

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def entry(user: str, device_id: str, access: Access, version: int) -> DeviceEntry:
    return DeviceEntry(
        user=user,
        device_id=device_id,
        access=access,
        reason=f"{access.value} (test)",
        source=EntrySource.COMPLIANCE,
        version=version,
        updated_at=NOW,
    )


def snapshot(version: int = 2, *entries: DeviceEntry, cluster: str = "c1") -> PolicySnapshot:
    devices = entries or (
        entry("alice", "dev1", Access.ALLOW, 1),
        entry("bob", "dev2", Access.BLOCK, 2),
    )
    return PolicySnapshot(
        cluster_id=cluster,
        version=version,
        generated_at=NOW,
        settings=ClusterSettings(),
        devices=devices,
    )


def delta(since: int, version: int, *entries: DeviceEntry) -> PolicyDelta:
    return PolicyDelta(
        cluster_id="c1", since_version=since, version=version, generated_at=NOW, devices=entries
    )


def push(e: DeviceEntry) -> PushChange:
    return PushChange(cluster_id="c1", version=e.version, devices=(e,))


def event(n: int, user: str = "alice") -> AccessEvent:
    return AccessEvent(
        event_id=f"{n:032x}",
        at=NOW,
        node_id="n1",
        user=user,
        device_id="dev1",
        command="Sync",
        decision=Access.ALLOW,
        reason="ok",
    )


# --- signed input -----------------------------------------------------------------------

SIGNER = LocalSigner.generate()  # the control plane's key in these tests


def trust(clock: Callable[[], float], *, cluster: str = "c1") -> PolicyTrust:
    """A node's trust: it pins ``SIGNER`` and belongs to ``cluster``."""
    return PolicyTrust((SIGNER.public,), cluster_id=cluster, max_skew_s=300, clock=clock)


def sign(
    kind: Kind,
    version: int,
    payload: bytes,
    at: float,
    *,
    cluster: str = "c1",
    since: int = 0,
    signer: LocalSigner = SIGNER,
) -> SignedPayload:
    return issue(
        signer,
        cluster_id=cluster,
        kind=kind,
        version=version,
        payload=payload,
        issued_at_ms=round(at * 1000),
        since_version=since,
    )


def signed_push(message: PushMessage, at: float, *, signer: LocalSigner = SIGNER) -> str:
    """A push as the control plane sends it: a ``signed`` envelope (JSON)."""
    version = 0 if isinstance(message, PushRevoked) else message.version
    signed = sign(
        Kind(message.type),
        version,
        message.model_dump_json().encode(),
        at,
        cluster=message.cluster_id,
        signer=signer,
    )
    return signed.envelope().model_dump_json()


def signed_snapshot(snap: PolicySnapshot, at: float) -> SignedPayload:
    return sign(
        Kind.SNAPSHOT, snap.version, snap.model_dump_json().encode(), at, cluster=snap.cluster_id
    )


def signed_delta(d: PolicyDelta, at: float) -> SignedPayload:
    return sign(
        Kind.DELTA,
        d.version,
        d.model_dump_json().encode(),
        at,
        cluster=d.cluster_id,
        since=d.since_version,
    )


def signed_confirm(version: int, at: float, *, cluster: str = "c1") -> SignedPayload:
    return sign(Kind.CONFIRM, version, b"", at, cluster=cluster)
