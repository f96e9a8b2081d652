"""The parameter types the routers share, spelled once: each port through its ``deps``
provider (so ``app.dependency_overrides`` replaces it everywhere), the stores a policy
change is published through, the clock, and the path parameters with their bounds. The
callers (``Admin``, ``Gateway``, ``DeviceServices``) are in ``auth``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path

from lambdas.api.deps import (
    access_history,
    audit_log,
    audit_retention_days,
    clock,
    cluster_store,
    compliance_queue,
    connection_poster,
    connection_store,
    credential_store,
    device_event_log,
    device_notes,
    device_store,
    email_device_view,
    gateway_node_store,
    jwks_source,
    notice_store,
    override_store,
    payload_queue,
    policy_entry_store,
    policy_log,
    policy_signing,
    roster_cache,
)
from lambdas.ports import (
    AccessHistoryStore,
    AuditLog,
    ClusterCredentialStore,
    ClusterStore,
    ComplianceQueue,
    ConnectionPoster,
    ConnectionStore,
    DeviceEventLog,
    DeviceNoteStore,
    DeviceStore,
    EmailDeviceView,
    GatewayNodeStore,
    JwksSource,
    ManualOverrideStore,
    NoticeStore,
    PayloadQueue,
    PolicyEntryStore,
    PolicyLog,
)
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.policy_versions import VersionStores
from lambdas.usecases.roster import RosterCache

Now = Annotated[datetime, Depends(clock)]
Clusters = Annotated[ClusterStore, Depends(cluster_store)]
Credentials = Annotated[ClusterCredentialStore, Depends(credential_store)]
Connections = Annotated[ConnectionStore, Depends(connection_store)]
Poster = Annotated[ConnectionPoster, Depends(connection_poster)]
Entries = Annotated[PolicyEntryStore, Depends(policy_entry_store)]
Log = Annotated[PolicyLog, Depends(policy_log)]
Nodes = Annotated[GatewayNodeStore, Depends(gateway_node_store)]
Devices = Annotated[DeviceStore, Depends(device_store)]
DeviceEvents = Annotated[DeviceEventLog, Depends(device_event_log)]
View = Annotated[EmailDeviceView, Depends(email_device_view)]
Overrides = Annotated[ManualOverrideStore, Depends(override_store)]
Queue = Annotated[ComplianceQueue, Depends(compliance_queue)]
Payloads = Annotated[PayloadQueue, Depends(payload_queue)]
Signing = Annotated[PolicySigning, Depends(policy_signing)]
Jwks = Annotated[JwksSource, Depends(jwks_source)]
Roster = Annotated[RosterCache, Depends(roster_cache)]
History = Annotated[AccessHistoryStore, Depends(access_history)]
Audit = Annotated[AuditLog, Depends(audit_log)]
AuditRetentionDays = Annotated[int, Depends(audit_retention_days)]
Notes = Annotated[DeviceNoteStore, Depends(device_notes)]
Notices = Annotated[NoticeStore, Depends(notice_store)]


def version_stores(
    *,
    clusters: Clusters,
    entries: Entries,
    log: Log,
    connections: Connections,
    poster: Poster,
    signing: Signing,
) -> VersionStores:
    return VersionStores(
        clusters=clusters,
        entries=entries,
        log=log,
        connections=connections,
        poster=poster,
        signing=signing,
    )


Publishing = Annotated[VersionStores, Depends(version_stores)]

ClusterId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
UserPath = Annotated[str, Path(min_length=1, max_length=256)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
MdmDeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
