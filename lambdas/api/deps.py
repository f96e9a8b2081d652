"""The API's composition root: settings, boto3 clients and adapters, built once per
process and handed to routes through FastAPI's ``Depends``.

``create_app`` puts one ``Container`` on ``app.state``; every provider below reads it, so
a test can replace the whole container (or any single provider) with
``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from fastapi import Request

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
from lambdas.usecases.roster import DEFAULT_REFRESH_S, RosterCache

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_sqs import SQSClient


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


def _c(request: Request) -> Container:
    return container(request)


def auth_config(request: Request) -> AuthConfig:
    return _c(request).auth


def credential_store(request: Request) -> ClusterCredentialStore:
    return _c(request).credentials


def email_device_view(request: Request) -> EmailDeviceView:
    return _c(request).email_devices


def gateway_node_store(request: Request) -> GatewayNodeStore:
    return _c(request).gateway_nodes


def payload_queue(request: Request) -> PayloadQueue:
    return _c(request).payload_queue


def compliance_queue(request: Request) -> ComplianceQueue:
    return _c(request).compliance_queue


def cluster_store(request: Request) -> ClusterStore:
    return _c(request).clusters


def device_store(request: Request) -> DeviceStore:
    return _c(request).devices


def device_event_log(request: Request) -> DeviceEventLog:
    return _c(request).device_events


def policy_entry_store(request: Request) -> PolicyEntryStore:
    return _c(request).policy_entries


def policy_log(request: Request) -> PolicyLog:
    return _c(request).policy_log


def connection_store(request: Request) -> ConnectionStore:
    return _c(request).connections


def connection_poster(request: Request) -> ConnectionPoster:
    return _c(request).poster


def override_store(request: Request) -> ManualOverrideStore:
    return _c(request).overrides


def jwks_source(request: Request) -> JwksSource:
    return _c(request).jwks


def roster_cache(request: Request) -> RosterCache:
    return _c(request).roster_cache


def access_history(request: Request) -> AccessHistoryStore:
    return _c(request).access_history


def audit_log(request: Request) -> AuditLog:
    return _c(request).audit_log


def audit_retention_days(request: Request) -> int:
    return _c(request).settings.audit_retention_days


def device_notes(request: Request) -> DeviceNoteStore:
    return _c(request).device_notes


def notice_store(request: Request) -> NoticeStore:
    return _c(request).notices


def policy_signing(request: Request) -> PolicySigning:
    return _c(request).policy_signing


def signing_key_store(request: Request) -> SigningKeyStore:
    return _c(request).signing_keys


def clock() -> datetime:
    """Now (a dependency, so tests can pin it)."""
    return datetime.now(UTC)
