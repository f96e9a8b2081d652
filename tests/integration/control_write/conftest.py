"""The write side's world under moto: every table and queue, the handlers' composition
roots rebuilt per test, a settable clock, and helpers that play the MDM (through the
device-event use case), the Lambda SQS event-source mapping (receive, invoke, delete what
succeeded) and gateway nodes (through the real ``$connect`` handler)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.adapters.dynamodb_cluster_credentials import DynamoDbClusterCredentials
from lambdas.adapters.dynamodb_clusters import DynamoDbClusters
from lambdas.adapters.dynamodb_connections import DynamoDbConnections
from lambdas.adapters.dynamodb_device_events import DynamoDbDeviceEvents
from lambdas.adapters.dynamodb_devices import DynamoDbDevices
from lambdas.adapters.dynamodb_manual_overrides import DynamoDbManualOverrides
from lambdas.adapters.dynamodb_policy_entries import DynamoDbPolicyEntries
from lambdas.adapters.dynamodb_policy_log import DynamoDbPolicyLog
from lambdas.adapters.sqs_compliance_queue import SqsComplianceQueue
from lambdas.composition import Adapters
from lambdas.domain.compliance import DeviceRecord
from lambdas.domain.mdm_events import MDM_EVENT
from lambdas.handlers import (
    compliance_reader,
    scheduled_checkin,
    ws_connect,
    ws_default,
    ws_disconnect,
)
from lambdas.usecases.clusters import register_cluster
from lambdas.usecases.device_events import EventReceipt, record_device_event
from lambdas.usecases.manual_overrides import request_override
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.policy_sync import build_delta, build_snapshot
from lambdas.usecases.policy_versions import VersionStores
from lambdas.usecases.resync import seed_cluster
from seg_contract import DeviceEntry, PolicyDelta, PolicySnapshot
from tests.support.aws import AwsEnv, aws  # noqa: F401  (fixture)
from tests.support.events import LambdaContext, sqs_event_from_messages, ws_connect_event

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class World:
    aws: AwsEnv
    clock: Clock
    devices: DynamoDbDevices
    entries: DynamoDbPolicyEntries
    clusters: DynamoDbClusters
    connections: DynamoDbConnections
    overrides: DynamoDbManualOverrides
    events: DynamoDbDeviceEvents
    credentials: DynamoDbClusterCredentials
    queue: SqsComplianceQueue
    log: DynamoDbPolicyLog
    _seq: int = 0

    @property
    def adapters(self) -> Adapters:
        return Adapters(
            self.aws.settings, dynamodb=self.aws.dynamodb, apigw=self.aws.apigw, kms=self.aws.kms
        )

    @property
    def versions(self) -> VersionStores:
        """The stores a policy version is committed through, pushing (signed) to moto."""
        return self.adapters.versions

    @property
    def signing(self) -> PolicySigning:
        """Signs with the stack's key in moto's KMS, as the functions do."""
        return self.adapters.policy_signing

    def snapshot(self, cluster_id: str) -> PolicySnapshot:
        return build_snapshot(
            cluster_id, clusters=self.clusters, entries=self.entries, log=self.log, now=self.clock()
        )

    def delta(self, cluster_id: str, since: int) -> PolicyDelta:
        return build_delta(
            cluster_id,
            since,
            clusters=self.clusters,
            entries=self.entries,
            log=self.log,
            now=self.clock(),
        )

    # --- the MDM and the console ---------------------------------------------------

    def mdm(self, body: dict[str, Any]) -> EventReceipt:
        """Post one Device Services event (what ``POST /mdm/v1/events`` does)."""
        self._seq += 1
        body = {"event_id": f"evt-{self._seq}", "occurred_at": self.clock.now.isoformat(), **body}
        return record_device_event(
            MDM_EVENT.validate_python(body),
            devices=self.devices,
            events=self.events,
            queue=self.queue,
            now=self.clock(),
        )

    def enroll(self, mdm_id: str, user: str, *eas_ids: str, **extra: Any) -> EventReceipt:
        return self.mdm(
            {
                "type": "enrollment",
                "mdm_device_id": mdm_id,
                "user": user,
                "eas_device_ids": list(eas_ids),
                "platform": "iPhone",
                "model": "iPhone15,2",
                "os_version": "17.1",
                **extra,
            }
        )

    def checkin(self, mdm_id: str, **posture: Any) -> EventReceipt:
        body = {"compromised": False, "encrypted": True, "passcode": True, **posture}
        return self.mdm({"type": "checkin", "mdm_device_id": mdm_id, **body})

    def override(self, user: str, device_id: str, action: str, reason: str = "") -> None:
        request_override(
            user,
            device_id,
            action,
            reason=reason,
            actor="admin@corp.example",
            queue=self.queue,
            now=self.clock(),
        )

    # --- gateways ------------------------------------------------------------------

    def cluster(self, name: str = "hq", *, seed: bool = True) -> tuple[str, str]:
        """Register a cluster as the API does (and, with ``seed``, seed it with the
        existing devices and run the reader until the queue is empty); return (cluster
        id, gateway credential)."""
        cluster, issued = register_cluster(
            name, None, clusters=self.clusters, credentials=self.credentials, now=self.clock()
        )
        if seed:
            seed_cluster(
                cluster.cluster_id, queue=self.queue, clusters=self.clusters, now=self.clock()
            )
            self.drain()
        return cluster.cluster_id, issued.token

    def connect(self, credential: str, node_id: str, connection_id: str) -> dict[str, Any]:
        event = ws_connect_event(
            connection_id,
            {"Authorization": f"Bearer {credential}", "X-SEG-Node-Id": node_id},
        )
        return ws_connect.handler(event, LambdaContext())

    def posted(self, connection_id: str) -> list[dict[str, Any]]:
        """What a connection received, each frame verified and unwrapped."""
        return self.aws.posted(connection_id)

    def posted_raw(self, connection_id: str) -> list[dict[str, Any]]:
        return self.aws.posted_raw(connection_id)

    # --- the compliance reader, as Lambda's event-source mapping drives it ----------

    def queue_arn(self) -> str:
        return self.aws.sqs.get_queue_attributes(
            QueueUrl=self.aws.queues["compliance"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

    def receive(self, visibility_timeout: int | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        return self.aws.sqs.receive_message(
            QueueUrl=self.aws.queues["compliance"],
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["All"],
            **kwargs,
        ).get("Messages", [])

    def invoke_reader(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Invoke the compliance reader on these messages and delete the ones it did
        not report as failed (what the event-source mapping does)."""
        response = compliance_reader.handler(
            sqs_event_from_messages(messages, self.queue_arn()), LambdaContext()
        )
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                self.aws.sqs.delete_message(
                    QueueUrl=self.aws.queues["compliance"], ReceiptHandle=message["ReceiptHandle"]
                )
        return response

    def drain(self) -> int:
        """Run the reader until the queue is empty; return how many messages it took."""
        total = 0
        while messages := self.receive():
            response = self.invoke_reader(messages)
            assert response == {"batchItemFailures": []}
            total += len(messages)
        return total

    def entry(self, cluster_id: str, user: str, device_id: str) -> DeviceEntry:
        found = self.entries.get_device_entry(cluster_id, user, device_id)
        assert found is not None, f"no entry for {user}/{device_id} in {cluster_id}"
        return found


@dataclass
class InterleavingDevices:
    """A device store that runs ``meanwhile`` once, just after the first read: a reader
    that has taken its versions and read its inputs, and has not committed yet."""

    inner: Any
    meanwhile: Any

    def get(self, mdm_device_id: str) -> DeviceRecord | None:
        record = self.inner.get(mdm_device_id)
        if self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def device_updates(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One item per device entry pushed (``entry``: the entry, plus the push's fields)."""
    return [
        {**m, "entry": entry} for m in messages if m["type"] == "change" for entry in m["devices"]
    ]


def dumps(value: Any) -> str:
    return json.dumps(value)


@pytest.fixture
def world(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:  # noqa: F811
    roots = (
        compliance_reader.function.root,
        scheduled_checkin.function.root,
        ws_connect.function.root,
        ws_default.function.root,
        ws_disconnect.function.root,
    )
    for cached in roots:
        cached.cache_clear()
    clock = Clock(T0)
    for module in (compliance_reader, scheduled_checkin, ws_connect, ws_default):
        monkeypatch.setattr(module.function, "clock", clock)
    client, settings = aws.dynamodb, aws.settings
    yield World(
        aws=aws,
        clock=clock,
        devices=DynamoDbDevices(settings.table("devices"), client),
        entries=DynamoDbPolicyEntries(settings.table("policy_entries"), client),
        clusters=DynamoDbClusters(settings.table("clusters"), client),
        connections=DynamoDbConnections(settings.table("connections"), client),
        overrides=DynamoDbManualOverrides(settings.table("manual_overrides"), client),
        events=DynamoDbDeviceEvents(settings.table("device_events"), client),
        credentials=DynamoDbClusterCredentials(settings.table("clusters"), client),
        queue=SqsComplianceQueue(settings.queue_url("compliance"), aws.sqs),
        log=Adapters(settings, dynamodb=client).policy_log,
    )
    for cached in roots:
        cached.cache_clear()
