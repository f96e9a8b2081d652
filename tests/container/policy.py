"""An air-gapped node's policy file (``SEG_GW_POLICY_FILE``) that allows given devices:
nodes that need no control plane (the load-balancer test, the start-up bench)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from seg_contract import Access, ClusterSettings, DeviceEntry, EntrySource, PolicySnapshot


def allow_policy_file(path: Path, devices: Iterable[tuple[str, str]], cluster_id: str) -> Path:
    """Write a version-1 PolicySnapshot allowing each (user, device_id)."""
    now = datetime.now(UTC)
    entries = tuple(
        DeviceEntry(
            user=user,
            device_id=device_id,
            access=Access.ALLOW,
            reason="allowed by the test's policy file",
            source=EntrySource.MANUAL,
            version=1,
            updated_at=now,
        )
        for user, device_id in devices
    )
    snapshot = PolicySnapshot(
        cluster_id=cluster_id,
        version=1,
        generated_at=now,
        settings=ClusterSettings(),
        devices=entries,
    )
    path.write_text(snapshot.model_dump_json())
    return path
