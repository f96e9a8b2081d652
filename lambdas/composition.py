"""The control plane's composition root: every adapter, built from ``lambdas.settings``
over one set of boto3 clients (the one place a table or queue name meets its adapter),
and the use-case objects composed over them (policy signing, version stores, journaled
stores). Clients and adapters are created on first use and reused while the Lambda
container is warm. It sits beside ``lambdas.adapters``, not in it, because it builds use
cases: adapters themselves never import one.

The HTTP API's container (``lambdas.api.deps.Container``) extends it, and each Lambda
function builds one in its cached composition root (``lambdas.handlers.skeleton``)."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.apigw_connections import ApiGatewayConnections
from lambdas.adapters.dynamodb_access_history import DynamoDbAccessHistory
from lambdas.adapters.dynamodb_audit_log import DynamoDbAuditLog
from lambdas.adapters.dynamodb_cluster_credentials import DynamoDbClusterCredentials
from lambdas.adapters.dynamodb_clusters import DynamoDbClusters
from lambdas.adapters.dynamodb_connections import DynamoDbConnections
from lambdas.adapters.dynamodb_device_events import DynamoDbDeviceEvents
from lambdas.adapters.dynamodb_device_notes import DynamoDbDeviceNotes
from lambdas.adapters.dynamodb_devices import DynamoDbDevices
from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices
from lambdas.adapters.dynamodb_gateway_nodes import DynamoDbGatewayNodes
from lambdas.adapters.dynamodb_manual_overrides import DynamoDbManualOverrides
from lambdas.adapters.dynamodb_notices import DynamoDbNotices
from lambdas.adapters.dynamodb_policy_entries import DynamoDbPolicyEntries
from lambdas.adapters.dynamodb_policy_log import DynamoDbPolicyLog
from lambdas.adapters.dynamodb_roster import DynamoDbRoster
from lambdas.adapters.dynamodb_signing_keys import DynamoDbSigningKeys
from lambdas.adapters.http_jwks import HttpJwks
from lambdas.adapters.kms_policy_signer import KmsPolicySigners
from lambdas.adapters.ses_mailer import SesMailer
from lambdas.adapters.sqs_compliance_queue import SqsComplianceQueue
from lambdas.adapters.sqs_notice_queue import SqsNoticeQueue
from lambdas.adapters.sqs_payload_queue import SqsPayloadQueue
from lambdas.ports import ConnectionPoster
from lambdas.settings import Settings
from lambdas.usecases.access_events import PayloadStores
from lambdas.usecases.compliance import ComplianceStores
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.policy_versions import VersionStores
from lambdas.usecases.roster import JOURNAL_TTL
from lambdas.usecases.roster_journaling import JournaledDevices, JournaledOverrides

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_sqs import SQSClient


class Adapters:
    """Adapters over one set of boto3 clients (injected, or created lazily)."""

    def __init__(
        self,
        settings: Settings,
        *,
        dynamodb: DynamoDBClient | None = None,
        sqs: SQSClient | None = None,
        apigw: ApiGatewayManagementApiClient | None = None,
        ses: Any = None,
        kms: KMSClient | None = None,
    ) -> None:
        self.settings = settings
        self._dynamodb = dynamodb
        self._sqs = sqs
        self._apigw = apigw
        self._ses = ses  # an SES v2 client (built lazily when None)
        self._kms = kms

    @cached_property
    def jwks(self) -> HttpJwks:
        """Token issuers' key sets over HTTPS (the system trust store)."""
        return HttpJwks()

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        return self._dynamodb or boto3.client("dynamodb")

    @cached_property
    def sqs(self) -> SQSClient:
        return self._sqs or boto3.client("sqs")

    @cached_property
    def poster(self) -> ConnectionPoster:
        """The Management API at the configured endpoint (``ValueError`` without one)."""
        return ApiGatewayConnections(self.settings.websocket_management_endpoint, self._apigw)

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
    def devices(self) -> JournaledDevices:
        """Device records; every write also tells the console's roster (journal)."""
        return JournaledDevices(
            DynamoDbDevices(self.settings.table("devices"), self.dynamodb), self.roster
        )

    @cached_property
    def device_events(self) -> DynamoDbDeviceEvents:
        return DynamoDbDeviceEvents(self.settings.table("device_events"), self.dynamodb)

    @cached_property
    def policy_entries(self) -> DynamoDbPolicyEntries:
        return DynamoDbPolicyEntries(self.settings.table("policy_entries"), self.dynamodb)

    @cached_property
    def policy_log(self) -> DynamoDbPolicyLog:
        return DynamoDbPolicyLog(
            self.settings.table("policy_log"),
            # A version's commit writes its entries and settings in the same transaction.
            entries_table=self.settings.table("policy_entries"),
            clusters_table=self.settings.table("clusters"),
            client=self.dynamodb,
        )

    @cached_property
    def connections(self) -> DynamoDbConnections:
        return DynamoDbConnections(self.settings.table("connections"), self.dynamodb)

    @property
    def versions(self) -> VersionStores:
        """Where a policy version is taken, committed, advanced and pushed from."""
        return VersionStores(
            clusters=self.clusters,
            entries=self.policy_entries,
            log=self.policy_log,
            connections=self.connections,
            poster=self.poster,
            signing=self.policy_signing,
        )

    @property
    def compliance_stores(self) -> ComplianceStores:
        """What the compliance reader evaluates, versions, writes and pushes through."""
        return ComplianceStores(
            devices=self.devices,
            entries=self.policy_entries,
            clusters=self.clusters,
            overrides=self.overrides,
            connections=self.connections,
            poster=self.poster,
            log=self.policy_log,
            signing=self.policy_signing,
            queue=self.compliance_queue,
        )

    @property
    def payload_stores(self) -> PayloadStores:
        """What the payload reader applies an access-event batch to."""
        return PayloadStores(
            view=self.email_devices,
            nodes=self.gateway_nodes,
            journal=self.roster,
            history=self.access_history,
            notices=self.notices,
            notice_queue=self.notice_queue,
        )

    @cached_property
    def overrides(self) -> JournaledOverrides:
        """Overrides; every write also tells the console's roster (journal)."""
        return JournaledOverrides(
            DynamoDbManualOverrides(self.settings.table("manual_overrides"), self.dynamodb),
            self.roster,
        )

    # --- the console's ---------------------------------------------------------------

    @cached_property
    def roster(self) -> DynamoDbRoster:
        """The roster's journal and snapshots (one table, both ports)."""
        return DynamoDbRoster(self.settings.table("roster"), self.dynamodb, journal_ttl=JOURNAL_TTL)

    @cached_property
    def access_history(self) -> DynamoDbAccessHistory:
        return DynamoDbAccessHistory(self.settings.table("access_history"), self.dynamodb)

    @cached_property
    def audit_log(self) -> DynamoDbAuditLog:
        return DynamoDbAuditLog(
            self.settings.table("audit_log"),
            self.dynamodb,
            retention_days=self.settings.audit_retention_days,
        )

    @cached_property
    def device_notes(self) -> DynamoDbDeviceNotes:
        return DynamoDbDeviceNotes(self.settings.table("device_notes"), self.dynamodb)

    @cached_property
    def notices(self) -> DynamoDbNotices:
        return DynamoDbNotices(self.settings.table("notices"), self.dynamodb)

    @cached_property
    def notice_queue(self) -> SqsNoticeQueue:
        return SqsNoticeQueue(self.settings.queue_url("notices"), self.sqs)

    @cached_property
    def mailer(self) -> SesMailer:
        return SesMailer(self._ses)

    # --- signed policy ------------------------------------------------------------------

    @cached_property
    def signing_keys(self) -> DynamoDbSigningKeys:
        return DynamoDbSigningKeys(self.settings.table("clusters"), self.dynamodb)

    @cached_property
    def policy_signing(self) -> PolicySigning:
        """Signs with the registry's active key; the KMS client is built on the first
        signature (a deployment without signing keys never builds one)."""
        return PolicySigning(
            KmsPolicySigners(self._kms),
            self.signing_keys,
            self.settings.policy_signing_key_arns,
            registry_ttl=timedelta(seconds=self.settings.policy_signing_registry_ttl_s),
        )
