"""An air-gapped node's policy file (``SEG_GW_POLICY_FILE``) that allows given devices:
nodes that need no control plane (the load-balancer test, the start-up bench). The file
is signed, as ``seg-gateway fetch-policy`` writes one, by ``POLICY_KEY``; a node that
reads it pins ``POLICY_PIN`` (``SEG_GW_POLICY_SIGNING_KEYS``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from seg_contract import Access, ClusterSettings, DeviceEntry, EntrySource, PolicySnapshot
from seg_contract.signing import Kind, LocalSigner, encode_record, issue

POLICY_KEY = LocalSigner.generate()
POLICY_PIN = POLICY_KEY.public.spki_b64


def allow_policy_file(path: Path, devices: Iterable[tuple[str, str]], cluster_id: str) -> Path:
    """Write a version-1 PolicySnapshot allowing each (user, device_id), signed now."""
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
    signed = issue(
        POLICY_KEY,
        cluster_id=cluster_id,
        kind=Kind.SNAPSHOT,
        version=snapshot.version,
        payload=snapshot.model_dump_json().encode(),
        issued_at_ms=int(now.timestamp() * 1000),
    )
    path.write_bytes(encode_record(signed))
    return path
