"""The API's composition root: settings, boto3 clients and adapters, built once per
process and handed to routes through FastAPI's ``Depends``.

``create_app`` puts one ``Container`` on ``app.state``; every provider below reads it, so
a test can replace the whole container (or any single provider) with
``app.dependency_overrides``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from fastapi import Request

from lambdas.adapters.apigw_connections import ApiGatewayConnections
from lambdas.adapters.dynamodb_cluster_credentials import DynamoDbClusterCredentials
from lambdas.adapters.dynamodb_clusters import DynamoDbClusters
from lambdas.adapters.dynamodb_connections import DynamoDbConnections
from lambdas.adapters.dynamodb_device_events import DynamoDbDeviceEvents
from lambdas.adapters.dynamodb_devices import DynamoDbDevices
from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices
from lambdas.adapters.dynamodb_gateway_nodes import DynamoDbGatewayNodes
from lambdas.adapters.dynamodb_manual_overrides import DynamoDbManualOverrides
from lambdas.adapters.dynamodb_policy_entries import DynamoDbPolicyEntries
from lambdas.adapters.secretsmanager_device_services_key import SecretsManagerKeyDigest
from lambdas.adapters.sqs_compliance_queue import SqsComplianceQueue
from lambdas.adapters.sqs_payload_queue import SqsPayloadQueue
from lambdas.domain.errors import PushFailed
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
    ManualOverrideStore,
    PayloadQueue,
    PolicyEntryStore,
)
from lambdas.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class AuthConfig:
    console_auth: str  # "jwt" | "static"
    console_token_sha256: str
    device_services_key_sha256: str


class Container:
    """Adapters over one set of boto3 clients (created lazily, reused warm)."""

    def __init__(
        self,
        settings: Settings,
        *,
        dynamodb: DynamoDBClient | None = None,
        sqs: SQSClient | None = None,
        apigw: ApiGatewayManagementApiClient | None = None,
        secrets: Any = None,
    ) -> None:
        self.settings = settings
        self._dynamodb = dynamodb
        self._sqs = sqs
        self._apigw = apigw
        self._secrets = secrets  # a Secrets Manager client (built lazily when None)

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        return self._dynamodb or boto3.client("dynamodb")

    @cached_property
    def sqs(self) -> SQSClient:
        return self._sqs or boto3.client("sqs")

    @cached_property
    def poster(self) -> ConnectionPoster:
        endpoint = self.settings.websocket_management_endpoint
        if self._apigw is None and not endpoint:
            return NoWebSocketApi()
        return ApiGatewayConnections(endpoint, self._apigw)

    @property
    def auth(self) -> AuthConfig:
        return AuthConfig(
            console_auth=self.settings.console_auth,
            console_token_sha256=self.settings.console_token_sha256,
            device_services_key_sha256=self.device_services_sha256(),
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

    @cached_property
    def credentials(self) -> DynamoDbClusterCredentials:
        return DynamoDbClusterCredentials(self.settings.table("clusters"), self.dynamodb)

    @cached_property
    def email_devices(self) -> DynamoDbEmailDevices:
        return DynamoDbEmailDevices(
            self.settings.table("email_devices"),
            self.dynamodb,
            # The dashboard joins a page with its MDM records and overrides in batch reads.
            devices_table=self.settings.table("devices"),
            overrides_table=self.settings.table("manual_overrides"),
        )

    @cached_property
    def gateway_nodes(self) -> DynamoDbGatewayNodes:
        return DynamoDbGatewayNodes(self.settings.table("gateway_nodes"), self.dynamodb)

    @cached_property
    def payload_queue(self) -> SqsPayloadQueue:
        return SqsPayloadQueue(self.settings.queue_url("payload"), self.sqs)

    @cached_property
    def compliance_queue(self) -> SqsComplianceQueue:
        return SqsComplianceQueue(self.settings.queue_url("compliance"), self.sqs)

    @cached_property
    def clusters(self) -> DynamoDbClusters:
        return DynamoDbClusters(self.settings.table("clusters"), self.dynamodb)

    @cached_property
    def devices(self) -> DynamoDbDevices:
        return DynamoDbDevices(self.settings.table("devices"), self.dynamodb)

    @cached_property
    def device_events(self) -> DynamoDbDeviceEvents:
        return DynamoDbDeviceEvents(self.settings.table("device_events"), self.dynamodb)

    @cached_property
    def policy_entries(self) -> DynamoDbPolicyEntries:
        return DynamoDbPolicyEntries(self.settings.table("policy_entries"), self.dynamodb)

    @cached_property
    def connections(self) -> DynamoDbConnections:
        return DynamoDbConnections(self.settings.table("connections"), self.dynamodb)

    @cached_property
    def overrides(self) -> DynamoDbManualOverrides:
        return DynamoDbManualOverrides(self.settings.table("manual_overrides"), self.dynamodb)


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


def connection_store(request: Request) -> ConnectionStore:
    return _c(request).connections


def connection_poster(request: Request) -> ConnectionPoster:
    return _c(request).poster


def override_store(request: Request) -> ManualOverrideStore:
    return _c(request).overrides


def clock() -> datetime:
    """Now (a dependency, so tests can pin it)."""
    return datetime.now(UTC)
