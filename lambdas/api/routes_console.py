"""Console routes (``/console/v1``): the dashboard, MDM devices, the compliance policy,
gateway clusters and credential substitution. Every route needs a console admin."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status

from lambdas.api import models
from lambdas.api.auth import ConsoleAdmin, console_admin
from lambdas.api.deps import (
    clock,
    cluster_store,
    compliance_queue,
    connection_poster,
    connection_store,
    credential_store,
    device_store,
    email_device_view,
    gateway_node_store,
    override_store,
    policy_entry_store,
)
from lambdas.domain.compliance import CompliancePolicy, DeviceRecord
from lambdas.domain.records import ClusterRecord
from lambdas.domain.timefmt import format_instant
from lambdas.ports import (
    ClusterCredentialStore,
    ClusterStore,
    ComplianceQueue,
    ConnectionPoster,
    ConnectionStore,
    DeviceStore,
    EmailDeviceView,
    GatewayNodeStore,
    ManualOverrideStore,
    PolicyEntryStore,
)
from lambdas.usecases import clusters as cluster_cases
from lambdas.usecases import console_devices, credential_substitution, dashboard
from lambdas.usecases.manual_overrides import request_override
from lambdas.usecases.policy_changes import change_settings
from seg_contract import ClusterSettings

router = APIRouter(prefix="/console/v1", tags=["console"])

Admin = Annotated[ConsoleAdmin, Depends(console_admin)]
Now = Annotated[datetime, Depends(clock)]
Clusters = Annotated[ClusterStore, Depends(cluster_store)]
Credentials = Annotated[ClusterCredentialStore, Depends(credential_store)]
Connections = Annotated[ConnectionStore, Depends(connection_store)]
Poster = Annotated[ConnectionPoster, Depends(connection_poster)]
Entries = Annotated[PolicyEntryStore, Depends(policy_entry_store)]
Devices = Annotated[DeviceStore, Depends(device_store)]
View = Annotated[EmailDeviceView, Depends(email_device_view)]
Overrides = Annotated[ManualOverrideStore, Depends(override_store)]
Nodes = Annotated[GatewayNodeStore, Depends(gateway_node_store)]
Queue = Annotated[ComplianceQueue, Depends(compliance_queue)]

ClusterId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
UserPath = Annotated[str, Path(min_length=1, max_length=256)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]


def _iso(value: datetime | None) -> str | None:
    return format_instant(value) if value is not None else None


@router.get("/whoami", response_model=models.WhoAmI)
def whoami(admin: Admin) -> models.WhoAmI:
    return models.WhoAmI(subject=admin.subject)


# --- Dashboard ----------------------------------------------------------------------------


@router.get("/email-devices", response_model=models.EmailDevicePage)
def list_email_devices(
    *,
    _admin: Admin,
    view: View,
    devices: Devices,
    overrides: Overrides,
    access_state: Annotated[Literal["allow", "block", "quarantine"] | None, Query()] = None,
    compliance_state: Annotated[
        Literal["compliant", "non_compliant", "unknown"] | None, Query()
    ] = None,
    q: Annotated[str | None, Query(max_length=256)] = None,
    sort: Annotated[Literal[dashboard.SORT_COLUMNS], Query()] = "last_seen",  # type: ignore[valid-type]
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    limit: Annotated[int, Query(ge=1, le=dashboard.MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> models.EmailDevicePage:
    query = dashboard.ListQuery(access_state, compliance_state, q, sort, order, limit, cursor)
    page = dashboard.list_email_devices(query, view=view, devices=devices, overrides=overrides)
    return models.EmailDevicePage(
        items=[models.EmailDevice(**dashboard.as_dict(r)) for r in page.items],
        next_cursor=page.next_cursor,
        total=page.total,
    )


@router.get("/email-devices/summary", response_model=models.Summary)
def email_device_summary(
    *,
    _admin: Admin,
    view: View,
    now: Now,
    minutes: Annotated[int, Query(ge=1, le=dashboard.MAX_SERIES_MINUTES)] = 60,
) -> models.Summary:
    found = dashboard.summary(view=view, now=now, minutes=minutes)
    return models.Summary(
        counts=found.counts,
        blocked_last_hour=found.blocked_last_hour,
        series=[models.SeriesPoint(t=t, requests=r, blocks=b) for t, r, b in found.series],
    )


@router.get("/email-devices/{user}/{device_id}", response_model=models.EmailDeviceDetail)
def email_device_detail(
    *,
    user: UserPath,
    device_id: DeviceIdPath,
    _admin: Admin,
    view: View,
    devices: Devices,
    overrides: Overrides,
    clusters: Clusters,
    entries: Entries,
) -> models.EmailDeviceDetail:
    row, found = dashboard.email_device_detail(
        user,
        device_id,
        view=view,
        devices=devices,
        overrides=overrides,
        clusters=clusters,
        entries=entries,
    )
    return models.EmailDeviceDetail(
        **dashboard.as_dict(row),
        entries=[
            models.PolicyEntryView(
                cluster_id=e.cluster_id,
                access=e.entry.access,
                reason=e.entry.reason,
                source=e.entry.source.value,
                version=e.entry.version,
                updated_at=format_instant(e.entry.updated_at),
            )
            for e in found
        ],
    )


@router.post(
    "/email-devices/{user}/{device_id}/override",
    response_model=models.Queued,
    status_code=status.HTTP_202_ACCEPTED,
)
def override_email_device(
    *,
    user: UserPath,
    device_id: DeviceIdPath,
    body: models.OverrideRequest,
    admin: Admin,
    queue: Queue,
    now: Now,
) -> models.Queued:
    request_override(
        user, device_id, body.action, reason=body.reason, actor=admin.subject, queue=queue, now=now
    )
    return models.Queued()


# --- MDM devices and the compliance policy ----------------------------------------------


def _mdm_device(device: DeviceRecord) -> models.MdmDevice:
    return models.MdmDevice(
        mdm_device_id=device.mdm_device_id,
        user=device.user,
        eas_device_ids=list(device.eas_device_ids),
        enrollment_state=device.enrollment_state.value,
        enrolled_at=format_instant(device.enrolled_at),
        unenrolled_at=_iso(device.unenrolled_at),
        platform=device.platform,
        model=device.model,
        os_version=device.os_version,
        managed=device.managed,
        last_checkin_at=_iso(device.last_checkin_at),
        compromised=device.compromised,
        encrypted=device.encrypted,
        passcode=device.passcode,
        compliance_state=device.compliance_state.value,
        compliance_reasons=list(device.compliance_reasons),
        evaluated_at=_iso(device.evaluated_at),
    )


@router.get("/devices", response_model=models.MdmDevicePage)
def list_devices(
    *,
    _admin: Admin,
    devices: Devices,
    limit: Annotated[int, Query(ge=1, le=console_devices.MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> models.MdmDevicePage:
    page, next_cursor = console_devices.list_devices(devices, limit, cursor)
    return models.MdmDevicePage(items=[_mdm_device(d) for d in page], next_cursor=next_cursor)


@router.get("/devices/{mdm_device_id}", response_model=models.MdmDevice)
def get_device(
    *,
    mdm_device_id: Annotated[str, Path(min_length=1, max_length=128)],
    _admin: Admin,
    devices: Devices,
) -> models.MdmDevice:
    return _mdm_device(console_devices.get_device(devices, mdm_device_id))


@router.get("/compliance-policy", response_model=CompliancePolicy)
def get_compliance_policy(_admin: Admin, clusters: Clusters) -> CompliancePolicy:
    return clusters.get_compliance_policy()


@router.put("/compliance-policy", response_model=CompliancePolicy)
def put_compliance_policy(
    *,
    policy: CompliancePolicy,
    _admin: Admin,
    clusters: Clusters,
    devices: Devices,
    queue: Queue,
    now: Now,
) -> CompliancePolicy:
    """Store the policy and queue every MDM device for re-evaluation under it."""
    console_devices.put_compliance_policy(
        policy, clusters=clusters, devices=devices, queue=queue, now=now
    )
    return policy


# --- Clusters -----------------------------------------------------------------------------


def _summary(cluster: ClusterRecord) -> models.ClusterSummary:
    return models.ClusterSummary(
        cluster_id=cluster.cluster_id,
        name=cluster.name,
        policy_version=max(cluster.policy_version, cluster.settings_version),
        created_at=format_instant(cluster.created_at),
    )


def _nodes(statuses: list[cluster_cases.NodeStatus]) -> list[models.NodeInfo]:
    return [
        models.NodeInfo(
            node_id=s.report.node_id,
            connected=s.connected,
            policy_version=s.report.policy_version,
            policy_age_s=s.report.policy_age_s,
            spool_depth=s.report.spool_depth,
            last_seen=s.report.last_seen or None,
            gateway_version=s.report.gateway_version,
        )
        for s in statuses
    ]


@router.post(
    "/clusters",
    response_model=models.ClusterCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Register a cluster; its credential is in this answer only",
)
def create_cluster(
    *,
    body: models.ClusterCreate,
    _admin: Admin,
    clusters: Clusters,
    credentials: Credentials,
    now: Now,
) -> models.ClusterCreated:
    cluster, issued = cluster_cases.register_cluster(
        body.name, body.public_key, clusters=clusters, credentials=credentials, now=now
    )
    return models.ClusterCreated(cluster_id=cluster.cluster_id, credential=issued.token)


@router.get("/clusters", response_model=list[models.ClusterSummary])
def list_clusters(_admin: Admin, clusters: Clusters) -> list[models.ClusterSummary]:
    return [_summary(c) for c in clusters.list_clusters()]


@router.get("/clusters/{cluster_id}", response_model=models.ClusterDetail)
def get_cluster(
    *,
    cluster_id: ClusterId,
    _admin: Admin,
    clusters: Clusters,
    credentials: Credentials,
    nodes: Nodes,
    connections: Connections,
) -> models.ClusterDetail:
    detail = cluster_cases.cluster_detail(
        cluster_id,
        clusters=clusters,
        credentials=credentials,
        nodes=nodes,
        connections=connections,
    )
    cluster = detail.cluster
    return models.ClusterDetail(
        cluster_id=cluster.cluster_id,
        name=cluster.name,
        created_at=format_instant(cluster.created_at),
        policy_version=max(cluster.policy_version, cluster.settings_version),
        settings_version=cluster.settings_version,
        settings=cluster.settings,
        public_key=cluster.public_key,
        nodes=_nodes(detail.nodes),
        credentials=[
            models.CredentialInfo(
                key_id=c.key_id,
                created_at=format_instant(c.created_at),
                revoked_at=_iso(c.revoked_at),
            )
            for c in detail.credentials
        ],
    )


@router.put("/clusters/{cluster_id}/settings", response_model=models.SettingsUpdated)
def put_settings(
    *,
    cluster_id: ClusterId,
    settings: ClusterSettings,
    _admin: Admin,
    clusters: Clusters,
    connections: Connections,
    poster: Poster,
) -> models.SettingsUpdated:
    """Store the settings under the cluster's next policy version and push them."""
    version, _report = change_settings(
        cluster_id, settings, clusters=clusters, connections=connections, poster=poster
    )
    return models.SettingsUpdated(cluster_id=cluster_id, version=version)


@router.put("/clusters/{cluster_id}/public-key", status_code=status.HTTP_204_NO_CONTENT)
def put_public_key(
    *,
    cluster_id: ClusterId,
    body: models.PublicKeyUpdate,
    _admin: Admin,
    clusters: Clusters,
) -> Response:
    """Set the key upstream passwords are sealed to. Passwords sealed to a previous key
    can no longer be opened by gateways holding the new one: set them again."""
    cluster_cases.set_public_key(cluster_id, body.public_key, clusters=clusters)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/clusters/{cluster_id}/credentials/rotate",
    response_model=models.CredentialIssued,
    status_code=status.HTTP_201_CREATED,
    summary="Issue a new credential (shown once); older keys stay valid until revoked",
)
def rotate_credential(
    *,
    cluster_id: ClusterId,
    _admin: Admin,
    clusters: Clusters,
    credentials: Credentials,
    now: Now,
) -> models.CredentialIssued:
    issued = cluster_cases.rotate_credential(
        cluster_id, clusters=clusters, credentials=credentials, now=now
    )
    return models.CredentialIssued(credential=issued.token, key_id=issued.key_id)


@router.post(
    "/clusters/{cluster_id}/credentials/revoke",
    response_model=models.Revoked,
    summary="Revoke one key (body key_id) or every key; its nodes are told and disconnected",
)
def revoke_credentials(
    *,
    cluster_id: ClusterId,
    _admin: Admin,
    clusters: Clusters,
    credentials: Credentials,
    connections: Connections,
    poster: Poster,
    now: Now,
    body: Annotated[models.RevokeRequest | None, Body()] = None,
) -> models.Revoked:
    revoked, closed = cluster_cases.revoke_credentials(
        cluster_id,
        body.key_id if body else None,
        clusters=clusters,
        credentials=credentials,
        connections=connections,
        poster=poster,
        now=now,
    )
    return models.Revoked(revoked=revoked, disconnected=closed)


@router.get("/clusters/{cluster_id}/nodes", response_model=list[models.NodeInfo])
def list_nodes(
    *,
    cluster_id: ClusterId,
    _admin: Admin,
    clusters: Clusters,
    credentials: Credentials,
    nodes: Nodes,
    connections: Connections,
) -> list[models.NodeInfo]:
    detail = cluster_cases.cluster_detail(
        cluster_id,
        clusters=clusters,
        credentials=credentials,
        nodes=nodes,
        connections=connections,
    )
    return _nodes(detail.nodes)


# --- Credential substitution --------------------------------------------------------------


@router.put(
    "/clusters/{cluster_id}/substitution/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a user's upstream password (sealed to the cluster's key, never returned)",
)
def put_upstream_password(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    body: models.UpstreamPassword,
    _admin: Admin,
    clusters: Clusters,
    entries: Entries,
    connections: Connections,
    poster: Poster,
    now: Now,
) -> Response:
    credential_substitution.set_upstream_password(
        cluster_id,
        user,
        body.upstream_password,
        clusters=clusters,
        entries=entries,
        connections=connections,
        poster=poster,
        now=now,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/clusters/{cluster_id}/substitution/{user}/device-password",
    response_model=models.DevicePassword,
    status_code=status.HTTP_201_CREATED,
    summary="Issue a device password (PW1): shown once, stored as a hash",
)
def issue_device_password(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    _admin: Admin,
    clusters: Clusters,
    entries: Entries,
    connections: Connections,
    poster: Poster,
    now: Now,
) -> models.DevicePassword:
    password = credential_substitution.issue_device_password(
        cluster_id,
        user,
        clusters=clusters,
        entries=entries,
        connections=connections,
        poster=poster,
        now=now,
    )
    return models.DevicePassword(device_password=password)


@router.delete("/clusters/{cluster_id}/substitution/{user}", status_code=status.HTTP_204_NO_CONTENT)
def delete_substitution(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    _admin: Admin,
    clusters: Clusters,
    entries: Entries,
    connections: Connections,
    poster: Poster,
    now: Now,
) -> Response:
    credential_substitution.remove_substitution(
        cluster_id,
        user,
        clusters=clusters,
        entries=entries,
        connections=connections,
        poster=poster,
        now=now,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
