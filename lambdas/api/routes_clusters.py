"""Console routes for gateway clusters (``/console/v1/clusters``): register, settings,
sealing key, credentials (rotate / revoke) and nodes, and credential substitution.
Every route needs a console admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status

from lambdas.api import models
from lambdas.api.auth import Admin
from lambdas.api.params import (
    ClusterId,
    Clusters,
    Connections,
    Credentials,
    DeviceIdPath,
    Jwks,
    Nodes,
    Now,
    Poster,
    Publishing,
    Queue,
    UserPath,
)
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
    _admin: Admin,
    stores: Publishing,
    jwks: Jwks,
    now: Now,
) -> models.SettingsUpdated:
    """Commit the settings as the cluster's next policy version and push them. The keys
    of every Bearer issuer with a ``jwks_uri`` are fetched first (422 when they cannot
    be), so nodes verify tokens with keys that travel in the policy."""
    version = token_issuers.save_settings(cluster_id, settings, stores=stores, source=jwks, now=now)
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
    _admin: Admin,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.set_upstream_password(
        cluster_id, user, body.upstream_password, stores=stores, now=now
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
    _admin: Admin,
    stores: Publishing,
    now: Now,
) -> models.DevicePassword:
    password = credential_substitution.issue_device_password(
        cluster_id, user, body.device_id, stores=stores, now=now
    )
    return models.DevicePassword(
        device_password=password, device_id=normalize_device_id(body.device_id)
    )


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
    _admin: Admin,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.revoke_device_password(
        cluster_id, user, device_id, stores=stores, now=now
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
    _admin: Admin,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.remove_unbound_passwords(cluster_id, user, stores=stores, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/clusters/{cluster_id}/substitution/{user}", status_code=status.HTTP_204_NO_CONTENT)
def delete_substitution(
    *,
    cluster_id: ClusterId,
    user: UserPath,
    _admin: Admin,
    stores: Publishing,
    now: Now,
) -> Response:
    credential_substitution.remove_substitution(cluster_id, user, stores=stores, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
