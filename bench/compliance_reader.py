"""The compliance reader's cost per message, in-process on moto.

Run:  .venv/bin/python bench/compliance_reader.py  [--devices N] [--clusters N] [--nodes N]

Enrolls N devices through the device-event use case, then drains the compliance queue
through the real handler (batches of 10, as the event-source mapping sends them) and
prints messages/s, AWS API calls per message by operation, and the time to build a
snapshot and a delta of one cluster. moto's in-process DynamoDB costs ~2 ms per call,
so calls per message is the figure that carries over to AWS; the rate does not.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(_name, _value)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from lambdas.adapters.dynamodb_cluster_credentials import DynamoDbClusterCredentials  # noqa: E402
from lambdas.adapters.dynamodb_clusters import DynamoDbClusters  # noqa: E402
from lambdas.adapters.dynamodb_connections import DynamoDbConnections  # noqa: E402
from lambdas.adapters.dynamodb_device_events import DynamoDbDeviceEvents  # noqa: E402
from lambdas.adapters.dynamodb_devices import DynamoDbDevices  # noqa: E402
from lambdas.adapters.dynamodb_policy_entries import DynamoDbPolicyEntries  # noqa: E402
from lambdas.adapters.sqs_compliance_queue import SqsComplianceQueue  # noqa: E402
from lambdas.composition import Adapters  # noqa: E402
from lambdas.domain.mdm_events import EnrollmentEvent  # noqa: E402
from lambdas.domain.records import Connection  # noqa: E402
from lambdas.handlers import compliance_reader  # noqa: E402
from lambdas.settings import load_settings  # noqa: E402
from lambdas.usecases.clusters import register_cluster  # noqa: E402
from lambdas.usecases.device_events import record_device_event  # noqa: E402
from lambdas.usecases.policy_sync import build_delta, build_snapshot  # noqa: E402
from tests.support.aws import create_all, environment  # noqa: E402
from tests.support.events import LambdaContext, sqs_event_from_messages  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()

    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        tables, queues, _ = create_all(dynamodb, sqs)
        os.environ.update(environment(tables, queues))
        load_settings.cache_clear()
        settings = load_settings()
        now = datetime.now(UTC)
        clusters = DynamoDbClusters(settings.table("clusters"), dynamodb)
        credentials = DynamoDbClusterCredentials(settings.table("clusters"), dynamodb)
        connections = DynamoDbConnections(settings.table("connections"), dynamodb)
        cluster_ids = []
        for c in range(args.clusters):
            cluster, _ = register_cluster(
                f"c{c}", None, clusters=clusters, credentials=credentials, now=now
            )
            cluster_ids.append(cluster.cluster_id)
            for n in range(args.nodes):
                connections.put(
                    Connection(f"conn-{c}-{n}", cluster.cluster_id, f"node-{n}", "k", now)
                )
        devices = DynamoDbDevices(settings.table("devices"), dynamodb)
        events = DynamoDbDeviceEvents(settings.table("device_events"), dynamodb)
        queue = SqsComplianceQueue(settings.queue_url("compliance"), sqs)
        for i in range(args.devices):
            record_device_event(
                EnrollmentEvent(
                    event_id=f"e{i}",
                    occurred_at=now,
                    mdm_device_id=f"mdm-{i}",
                    user=f"user{i}",
                    eas_device_ids=(f"dev{i}",),
                ),
                devices=devices,
                events=events,
                queue=queue,
                now=now,
            )

        calls: collections.Counter[str] = collections.Counter()

        def count(event_name: str, **_: Any) -> None:
            calls[event_name.split(".", 2)[2]] += 1

        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("before-call.*.*", count)
        compliance_reader.function.root.cache_clear()
        url = settings.queue_url("compliance")
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        processed = 0
        started = time.perf_counter()
        while True:
            batch = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                break
            with contextlib.redirect_stdout(io.StringIO()):  # the metrics' EMF lines
                response = compliance_reader.handler(
                    sqs_event_from_messages(batch, arn), LambdaContext()
                )
            assert response["batchItemFailures"] == []
            for message in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            processed += len(batch)
        elapsed = time.perf_counter() - started

        entries = DynamoDbPolicyEntries(settings.table("policy_entries"), dynamodb)
        log = Adapters(settings, dynamodb=dynamodb).policy_log
        t0 = time.perf_counter()
        snapshot = build_snapshot(
            cluster_ids[0], clusters=clusters, entries=entries, log=log, now=now
        )
        t_snapshot = time.perf_counter() - t0
        t0 = time.perf_counter()
        delta = build_delta(
            cluster_ids[0],
            snapshot.version - 10,
            clusters=clusters,
            entries=entries,
            log=log,
            now=now,
        )
        t_delta = time.perf_counter() - t0

    print(
        f"devices={args.devices} clusters={args.clusters} nodes/cluster={args.nodes} "
        f"messages={processed}"
    )
    print(
        f"reader: {processed / elapsed:.0f} messages/s ({1000 * elapsed / processed:.1f} ms each)"
    )
    per = {op: round(n / processed, 2) for op, n in sorted(calls.items())}
    print(f"AWS calls per message: {sum(calls.values()) / processed:.1f} {per}")
    print(
        f"snapshot of {len(snapshot.devices)} entries: {1000 * t_snapshot:.0f} ms; "
        f"delta of {len(delta.devices)}: {1000 * t_delta:.0f} ms"
    )


if __name__ == "__main__":
    main()
