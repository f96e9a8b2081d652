"""Small builders shared by the agent's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from seg_contract import (
    Access,
    AccessEvent,
    ClusterSettings,
    DeviceEntry,
    EntrySource,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
)

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
