"""The API's composition root: settings, boto3 clients and adapters, built once per
process and handed to routes through FastAPI's ``Depends``.

``create_app`` puts one ``Container`` on ``app.state``; each port or use case reaches a
route in one step, as a parameter of one of the ``Annotated`` types below (``Clusters``,
``Publishing``, ...). A test replaces the whole container, or a named provider
(``clock``, ``connection_poster``, ``jwks_source``) with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request

from lambdas.adapters.secretsmanager_device_services_key import SecretsManagerKeyDigest
from lambdas.composition import Adapters
from lambdas.domain.errors import PushFailed
from lambdas.domain.roles import Role
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
    SigningKeyStore,
)
from lambdas.settings import Settings
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.policy_versions import VersionStores
from lambdas.usecases.roster import DEFAULT_REFRESH_S, RosterCache

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")


@dataclass(frozen=True)
class AuthConfig:
    console_auth: str  # "jwt" | "static"
    # The static tokens (sha256 hex) and the role each one carries, admin first.
    console_tokens: tuple[tuple[Role, str], ...]
    # Resolved only when a Device Services call is authenticated: in AWS it reads
    # Secrets Manager, and a console or gateway call must not depend on that secret.
    device_services_key_sha256: Callable[[], str]


class Container(Adapters):
    """The API's adapters (``lambdas.composition``), a poster that tolerates a
    deployment without a WebSocket API, the callers' authentication settings, and the
    warm function's copy of the console's roster."""

    def __init__(
        self,
        settings: Settings,
        *,
        dynamodb: DynamoDBClient | None = None,
        sqs: SQSClient | None = None,
        apigw: ApiGatewayManagementApiClient | None = None,
        secrets: Any = None,
        roster_refresh_s: float = DEFAULT_REFRESH_S,
        kms: KMSClient | None = None,
    ) -> None:
        super().__init__(settings, dynamodb=dynamodb, sqs=sqs, apigw=apigw, kms=kms)
        self._secrets = secrets  # a Secrets Manager client (built lazily when None)
        self._roster_refresh_s = roster_refresh_s

    @cached_property
    def roster_cache(self) -> RosterCache:
        return RosterCache(
            snapshots=self.roster,
            journal=self.roster,
            view=self.email_devices,
            refresh_s=self._roster_refresh_s,
        )

    @cached_property
    def poster(self) -> ConnectionPoster:
        if self._apigw is None and not self.settings.websocket_management_endpoint:
            return NoWebSocketApi()
        return super().poster

    @property
    def auth(self) -> AuthConfig:
        settings = self.settings
        tokens = (
            (Role.ADMIN, settings.console_token_sha256),
            (Role.OPERATOR, settings.console_operator_token_sha256),
            (Role.VIEWER, settings.console_viewer_token_sha256),
        )
        return AuthConfig(
            console_auth=settings.console_auth,
            console_tokens=tuple((role, digest) for role, digest in tokens if digest),
            device_services_key_sha256=self.device_services_sha256,
        )

    @cached_property
    def _device_services_secret(self) -> SecretsManagerKeyDigest | None:
        arn = self.settings.device_services_secret_arn
        return SecretsManagerKeyDigest(arn, self._secrets) if arn else None

    def device_services_sha256(self) -> str:
        """The configured digest (local runs) or the Secrets Manager key's (AWS)."""
        if self.settings.device_services_key_sha256:
            return self.settings.device_services_key_sha256
        secret = self._device_services_secret
        return secret.sha256() if secret is not None else ""


class NoWebSocketApi:
    """The poster of a deployment without a WebSocket API: no connection can exist, so
    nothing is ever posted; a call means a connection record from elsewhere."""

    def post(self, connection_id: str, data: bytes) -> None:
        raise PushFailed("no WebSocket management endpoint configured")

    def disconnect(self, connection_id: str) -> None:
        raise PushFailed("no WebSocket management endpoint configured")


def container(request: Request) -> Container:
    found: Any = request.app.state.container
    assert isinstance(found, Container)
    return found


def from_container(pick: Callable[[Container], T]) -> Callable[[Request], T]:
    """A provider of one thing the app's container holds."""

    def provide(request: Request) -> T:
        return pick(container(request))

    return provide


def clock() -> datetime:
    """Now (a dependency, so tests can pin it)."""
    return datetime.now(UTC)


# The providers tests replace through ``app.dependency_overrides`` have a name; every
# other one is reached through its type below.
connection_poster = from_container(lambda c: c.poster)
jwks_source = from_container(lambda c: c.jwks)

# What a route or a caller takes from the container: one ``Annotated`` type each.
Now = Annotated[datetime, Depends(clock)]
Auth = Annotated[AuthConfig, Depends(from_container(lambda c: c.auth))]
Clusters = Annotated[ClusterStore, Depends(from_container(lambda c: c.clusters))]
Credentials = Annotated[ClusterCredentialStore, Depends(from_container(lambda c: c.credentials))]
Connections = Annotated[ConnectionStore, Depends(from_container(lambda c: c.connections))]
Poster = Annotated[ConnectionPoster, Depends(connection_poster)]
Entries = Annotated[PolicyEntryStore, Depends(from_container(lambda c: c.policy_entries))]
Log = Annotated[PolicyLog, Depends(from_container(lambda c: c.policy_log))]
Nodes = Annotated[GatewayNodeStore, Depends(from_container(lambda c: c.gateway_nodes))]
Devices = Annotated[DeviceStore, Depends(from_container(lambda c: c.devices))]
DeviceEvents = Annotated[DeviceEventLog, Depends(from_container(lambda c: c.device_events))]
View = Annotated[EmailDeviceView, Depends(from_container(lambda c: c.email_devices))]
Overrides = Annotated[ManualOverrideStore, Depends(from_container(lambda c: c.overrides))]
Queue = Annotated[ComplianceQueue, Depends(from_container(lambda c: c.compliance_queue))]
Payloads = Annotated[PayloadQueue, Depends(from_container(lambda c: c.payload_queue))]
Signing = Annotated[PolicySigning, Depends(from_container(lambda c: c.policy_signing))]
SigningKeyRegistry = Annotated[SigningKeyStore, Depends(from_container(lambda c: c.signing_keys))]
Jwks = Annotated[JwksSource, Depends(jwks_source)]
Roster = Annotated[RosterCache, Depends(from_container(lambda c: c.roster_cache))]
History = Annotated[AccessHistoryStore, Depends(from_container(lambda c: c.access_history))]
Audit = Annotated[AuditLog, Depends(from_container(lambda c: c.audit_log))]
AuditRetentionDays = Annotated[
    int, Depends(from_container(lambda c: c.settings.audit_retention_days))
]
Notes = Annotated[DeviceNoteStore, Depends(from_container(lambda c: c.device_notes))]
Notices = Annotated[NoticeStore, Depends(from_container(lambda c: c.notices))]


def version_stores(
    *,
    clusters: Clusters,
    entries: Entries,
    log: Log,
    connections: Connections,
    poster: Poster,
    signing: Signing,
) -> VersionStores:
    """The stores a policy change is published through (from the providers above, so an
    override of one of them applies here too)."""
    return VersionStores(
        clusters=clusters,
        entries=entries,
        log=log,
        connections=connections,
        poster=poster,
        signing=signing,
    )


Publishing = Annotated[VersionStores, Depends(version_stores)]
