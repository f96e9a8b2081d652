"""Builders shared by the gateway-core tests (values only, no fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from onprem_gateway.core.facts import RequestFacts
from seg_contract import (
    Access,
    ClusterSettings,
    DeviceEntry,
    DeviceRule,
    EntrySource,
    PolicySnapshot,
    RuleField,
    UserCredential,
)

T0 = datetime(2026, 11, 27, tzinfo=UTC)
NOW = 1_800_000_000.0


def entry(
    user: str,
    device_id: str,
    access: Access = Access.ALLOW,
    *,
    version: int = 1,
    source: EntrySource = EntrySource.COMPLIANCE,
    reason: str = "",
    **extra: Any,
) -> DeviceEntry:
    return DeviceEntry(
        user=user,
        device_id=device_id,
        access=access,
        reason=reason or f"{source.value}: {access.value}",
        source=source,
        version=version,
        updated_at=T0,
        **extra,
    )


def credential(user: str, *, version: int = 1, **extra: Any) -> UserCredential:
    return UserCredential(user=user, version=version, updated_at=T0, **extra)


def rule(rule_id: str, field: RuleField, pattern: str, action: Access) -> DeviceRule:
    return DeviceRule(id=rule_id, field=field, pattern=pattern, action=action)


def snapshot(
    *,
    version: int = 10,
    devices: tuple[DeviceEntry, ...] = (),
    credentials: tuple[UserCredential, ...] = (),
    cluster_id: str = "c1",
    **settings: Any,
) -> PolicySnapshot:
    return PolicySnapshot(
        cluster_id=cluster_id,
        version=version,
        generated_at=T0,
        settings=ClusterSettings(**settings),
        devices=devices,
        credentials=credentials,
    )


def facts(
    user: str = "alice",
    device_id: str = "dev1",
    *,
    command: str = "Sync",
    method: str = "POST",
    device_type: str = "iPhone",
    user_agent: str = "Apple-iPhone/1",
    protocol_version: str = "14.1",
) -> RequestFacts:
    return RequestFacts(
        method=method,
        command=command,
        user=user,
        device_id=device_id,
        device_type=device_type,
        protocol_version=protocol_version,
        policy_key=None,
        user_agent=user_agent,
        query_form="plain",
        raw_user=user,
        parameters=MappingProxyType({}),
    )
