"""The parameter types the routers share, spelled once: each port through its ``deps``
provider (so ``app.dependency_overrides`` replaces it everywhere), the stores a policy
change is published through, the clock, and the path parameters with their bounds. The
callers (``Admin``, ``Gateway``, ``DeviceServices``) are in ``auth``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path

from lambdas.api.deps import (
    clock,
    cluster_store,
    compliance_queue,
    connection_poster,
    connection_store,
    credential_store,
    device_event_log,
    device_store,
    email_device_view,
    gateway_node_store,
    jwks_source,
    override_store,
    payload_queue,
    policy_entry_store,
)
from lambdas.ports import (
    ClusterCredentialStore,
    ClusterStore,
    ComplianceQueue,
    ConnectionPoster,
    ConnectionStore,
    DeviceEventLog,
    DeviceStore,
    EmailDeviceView,
    GatewayNodeStore,
    JwksSource,
    ManualOverrideStore,
    PayloadQueue,
    PolicyEntryStore,
)
from lambdas.usecases.policy_changes import PolicyStores

Now = Annotated[datetime, Depends(clock)]
Clusters = Annotated[ClusterStore, Depends(cluster_store)]
Credentials = Annotated[ClusterCredentialStore, Depends(credential_store)]
Connections = Annotated[ConnectionStore, Depends(connection_store)]
Poster = Annotated[ConnectionPoster, Depends(connection_poster)]
Entries = Annotated[PolicyEntryStore, Depends(policy_entry_store)]
Nodes = Annotated[GatewayNodeStore, Depends(gateway_node_store)]
Devices = Annotated[DeviceStore, Depends(device_store)]
DeviceEvents = Annotated[DeviceEventLog, Depends(device_event_log)]
View = Annotated[EmailDeviceView, Depends(email_device_view)]
Overrides = Annotated[ManualOverrideStore, Depends(override_store)]
Queue = Annotated[ComplianceQueue, Depends(compliance_queue)]
Payloads = Annotated[PayloadQueue, Depends(payload_queue)]
Jwks = Annotated[JwksSource, Depends(jwks_source)]


def policy_stores(
    clusters: Clusters, entries: Entries, connections: Connections, poster: Poster
) -> PolicyStores:
    return PolicyStores(clusters=clusters, entries=entries, connections=connections, poster=poster)


Publishing = Annotated[PolicyStores, Depends(policy_stores)]

ClusterId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
UserPath = Annotated[str, Path(min_length=1, max_length=256)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
MdmDeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
