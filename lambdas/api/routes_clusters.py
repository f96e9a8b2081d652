"""Console routes for gateway clusters (``/console/v1/clusters``): register, settings,
sealing key, credentials (rotate / revoke) and nodes, and credential substitution.
Reads need the viewer role, changes the admin role; each change is recorded in the
audit trail (never a secret: passwords and credentials appear only as facts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from lambdas.api import models
from lambdas.api.auth import AdminAudit, Viewer
from lambdas.api.deps import (
    Clusters,
    Connections,
    Credentials,
    Jwks,
    Nodes,
    Now,
    Poster,
    Publishing,
    Queue,
    Signing,
)
from lambdas.api.params import ClusterId, DeviceIdPath, UserPath
from lambdas.domain.records import ClusterRecord
from lambdas.domain.timefmt import format_instant, format_optional_instant
from lambdas.usecases import clusters as cluster_cases
from lambdas.usecases import credential_substitution, token_issuers
from seg_contract import ClusterSettings, normalize_device_id

router = APIRouter(prefix="/console/v1", tags=["console"])


# --- Clusters -----------------------------------------------------------------------------


def _summary(cluster: ClusterRecord) -> models.ClusterSummary:
    return models.ClusterSummary(
        cluster_id=cluster.cluster_id,
        name=cluster.name,
        policy_version=cluster.committed_version,
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
            digest_check=s.report.digest_check or None,
            last_verified_at=s.report.last_verified_at or None,
            digest_mismatches=s.report.digest_mismatches,
            policy_rejections=s.report.policy_rejections,
            last_rejection=s.report.last_rejection or None,
            last_rejection_at=s.report.last_rejection_at or None,
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
    audit: AdminAudit,
    clusters: Clusters,
    credentials: Credentials,
    queue: Queue,
    now: Now,
) -> models.ClusterCreated:
    cluster, issued = cluster_cases.create_cluster(
        body.name,
        body.public_key,
        clusters=clusters,
        credentials=credentials,
        queue=queue,
        now=now,
    )
    audit.record(
        "cluster.create",
        cluster.cluster_id,
        after={"name": cluster.name, "key_id": issued.key_id, "public_key": cluster.public_key},
    )
    return models.ClusterCreated(cluster_id=cluster.cluster_id, credential=issued.token)


@router.get("/clusters", response_model=list[models.ClusterSummary])
def list_clusters(_user: Viewer, clusters: Clusters) -> list[models.ClusterSummary]:
    return [_summary(c) for c in clusters.list_clusters()]


@router.get("/clusters/{cluster_id}", response_model=models.ClusterDetail)
def get_cluster(
    *,
    cluster_id: ClusterId,
    _user: Viewer,
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
        policy_version=cluster.committed_version,
        settings_version=cluster.settings_version,
        settings=cluster.settings,
        public_key=cluster.public_key,
        nodes=_nodes(detail.nodes),
        credentials=[
            models.CredentialInfo(
                key_id=c.key_id,
                created_at=format_instant(c.created_at),
                revoked_at=format_optional_instant(c.revoked_at),
            )
            for c in detail.credentials
        ],
    )


@router.put("/clusters/{cluster_id}/settings", response_model=models.SettingsUpdated)
def put_settings(
    *,
    cluster_id: ClusterId,
    settings: ClusterSettings,
    audit: AdminAudit,
    stores: Publishing,
    jwks: Jwks,
    now: Now,
) -> models.SettingsUpdated:
    """Commit the settings as the cluster's next policy version and push them. The keys
    of every Bearer issuer with a ``jwks_uri`` are fetched first (422 when they cannot
    be), so nodes verify tokens with keys that travel in the policy."""
    held = stores.clusters.get_cluster(cluster_id)
    version = token_issuers.save_settings(cluster_id, settings, stores=stores, source=jwks, now=now)
    audit.record(
        "cluster.settings",
        cluster_id,
        before=held.settings.model_dump(mode="json") if held else None,
        after={**settings.model_dump(mode="json"), "version": version},
    )
    return models.SettingsUpdated(cluster_id=cluster_id, version=version)


@router.put("/clusters/{cluster_id}/public-key", status_code=status.HTTP_204_NO_CONTENT)
def put_public_key(
    *,
    cluster_id: ClusterId,
    body: models.PublicKeyUpdate,
    audit: AdminAudit,
    clusters: Clusters,
) -> Response:
    """Set the key upstream passwords are sealed to. Passwords sealed to a previous key
    can no longer be opened by gateways holding the new one: set them again."""
    held = clusters.get_cluster(cluster_id)
    key = cluster_cases.set_public_key(cluster_id, body.public_key, clusters=clusters)
    audit.record(
        "cluster.public_key",
        cluster_id,
        before={"public_key": held.public_key if held else None},
        after={"public_key": key},
    )
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
    audit: AdminAudit,
    clusters: Clusters,
    credentials: Credentials,
    now: Now,
) -> models.CredentialIssued:
    issued = cluster_cases.rotate_credential(
        cluster_id, clusters=clusters, credentials=credentials, now=now
    )
    audit.record("cluster.credential.rotate", cluster_id, after={"key_id": issued.key_id})
    return models.CredentialIssued(credential=issued.token, key_id=issued.key_id)


@router.post(
    "/clusters/{cluster_id}/credentials/revoke",
    response_model=models.Revoked,
    summary="Revoke one key (body key_id) or every key; its nodes are told and disconnected",
)
def revoke_credentials(
    *,
    cluster_id: ClusterId,
    audit: AdminAudit,
    clusters: Clusters,
    credentials: Credentials,
    connections: Connections,
    poster: Poster,
    signing: Signing,
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
        signing=signing,
        now=now,
    )
    audit.record(
        "cluster.credential.revoke",
        cluster_id,
        before={"key_id": body.key_id if body else "all"},
        after={"revoked": revoked, "disconnected": closed},
    )
    return models.Revoked(revoked=revoked, disconnected=closed)


@router.get("/clusters/{cluster_id}/nodes", response_model=list[models.NodeInfo])
def list_nodes(
    *,
    cluster_id: ClusterId,
    _user: Viewer,
    clusters: Clusters,
    nodes: Nodes,
    connections: Connections,
) -> list[models.NodeInfo]:
    statuses = cluster_cases.cluster_nodes(
        cluster_id, clusters=clusters, nodes=nodes, connections=connections
    )
    return _nodes(statuses)


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
    audit: AdminAudit,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.set_upstream_password(
        cluster_id, user, body.upstream_password, stores=stores, now=now
    )
    audit.record(
        "substitution.upstream_password", f"{cluster_id}/{user}", after={"upstream_password": True}
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/clusters/{cluster_id}/substitution/{user}/device-password",
    response_model=models.DevicePassword,
    status_code=status.HTTP_201_CREATED,
    summary="Issue a device password (PW1) for one DeviceId: shown once, stored as a hash",
)
def issue_device_password(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    body: models.DevicePasswordRequest,
    audit: AdminAudit,
    stores: Publishing,
    now: Now,
) -> models.DevicePassword:
    password = credential_substitution.issue_device_password(
        cluster_id, user, body.device_id, stores=stores, now=now
    )
    device_id = normalize_device_id(body.device_id)
    # Names the admin, the cluster, the user and the device; never the password.
    audit.record(
        "substitution.device_password",
        f"{cluster_id}/{user}",
        after={"device_password": True, "device_id": device_id},
    )
    return models.DevicePassword(device_password=password, device_id=device_id)


@router.delete(
    "/clusters/{cluster_id}/substitution/{user}/device-password/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw one device's password (its held requests end on every node)",
)
def delete_device_password(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    device_id: DeviceIdPath,
    audit: AdminAudit,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.revoke_device_password(
        cluster_id, user, device_id, stores=stores, now=now
    )
    audit.record(
        "substitution.device_password_revoked",
        f"{cluster_id}/{user}",
        after={"device_password": False, "device_id": normalize_device_id(device_id)},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/clusters/{cluster_id}/substitution/{user}/unbound-device-passwords",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw the device passwords issued before passwords were bound to a device",
)
def delete_unbound_device_passwords(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    audit: AdminAudit,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.remove_unbound_passwords(cluster_id, user, stores=stores, now=now)
    audit.record(
        "substitution.unbound_passwords_removed",
        f"{cluster_id}/{user}",
        after={"unbound_device_passwords": False},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/clusters/{cluster_id}/substitution/{user}", status_code=status.HTTP_204_NO_CONTENT)
def delete_substitution(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    audit: AdminAudit,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.remove_substitution(cluster_id, user, stores=stores, now=now)
    audit.record("substitution.remove", f"{cluster_id}/{user}", after={"substitution": False})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
