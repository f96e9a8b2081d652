"""Builders of policy entries and version proposals for the control plane's tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from lambdas.domain.policy_commit import Proposal
from seg_contract import Access, DeviceEntry, EntrySource

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def device_entry(
    user: str,
    version: int,
    access: Access = Access.BLOCK,
    *,
    device_id: str = "dev1",
    at: datetime = T0,
    source: EntrySource = EntrySource.MANUAL,
) -> DeviceEntry:
    return DeviceEntry(
        user=user,
        device_id=device_id,
        access=access,
        reason=f"test v{version}",
        source=source,
        version=version,
        updated_at=at,
    )


def propose_entry(
    user: str, access: Access = Access.BLOCK, *, device_id: str = "dev1", at: datetime = T0
) -> Callable[[int], Proposal]:
    """A writer's proposal: one device entry, stamped with the version it commits as."""
    return lambda version: Proposal(
        devices=(device_entry(user, version, access, device_id=device_id, at=at),)
    )
