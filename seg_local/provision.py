"""Create every table and queue of ``lambdas.resources`` in moto, and name them in the
environment the handlers read.

Generic on purpose: a table, index, TTL or queue added to ``lambdas.resources`` appears
here with no change. Creation is idempotent (an existing table or queue is kept), so a
control plane restarted against the same moto server finds its data again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lambdas import resources
from seg_local.aws_events import queue_arn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provisioned:
    tables: Mapping[str, str]  # table id -> physical name
    queues: Mapping[str, str]  # queue id -> URL
    queue_arns: Mapping[str, str]  # queue id -> ARN
    dlqs: Mapping[str, str]  # queue id -> its dead-letter queue's URL

    def env(self) -> dict[str, str]:
        """The environment variables ``lambdas.settings`` reads for these resources."""
        env = {resources.table(tid).env: name for tid, name in self.tables.items()}
        env.update({resources.queue(qid).env: url for qid, url in self.queues.items()})
        return env


def table_name(prefix: str, table: resources.Table) -> str:
    return f"{prefix}-{table.id}"


def queue_name(prefix: str, queue: resources.Queue, *, dlq: bool = False) -> str:
    base = f"{prefix}-{queue.id}" + ("-dlq" if dlq else "")
    return base + (".fifo" if queue.fifo else "")


def _table_request(name: str, table: resources.Table) -> dict[str, Any]:
    keys = [table.partition] + ([table.sort] if table.sort else [])
    attributes = {k.name: k.type.value for k in keys}
    for index in table.indexes:
        for key in [index.partition] + ([index.sort] if index.sort else []):
            attributes[key.name] = key.type.value

    def schema(partition: resources.Key, sort: resources.Key | None) -> list[dict[str, str]]:
        out = [{"AttributeName": partition.name, "KeyType": "HASH"}]
        if sort:
            out.append({"AttributeName": sort.name, "KeyType": "RANGE"})
        return out

    request: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": t} for n, t in sorted(attributes.items())
        ],
        "KeySchema": schema(table.partition, table.sort),
    }
    if table.indexes:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": schema(index.partition, index.sort),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in table.indexes
        ]
    return request


def create_tables(dynamodb: Any, prefix: str) -> dict[str, str]:
    existing = set(dynamodb.list_tables().get("TableNames", []))
    names: dict[str, str] = {}
    for table in resources.TABLES:
        name = table_name(prefix, table)
        names[table.id] = name
        if name in existing:
            continue
        dynamodb.create_table(**_table_request(name, table))
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        log.debug("created table %s", name)
    return names


def create_queues(
    sqs: Any, prefix: str, visibility_timeout_s: Mapping[str, int] | None = None
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Each queue with its DLQ and redrive policy. ``visibility_timeout_s`` overrides the
    declared timeout per queue id (tests of redelivery use seconds, not minutes)."""
    overrides = visibility_timeout_s or {}
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    dlqs: dict[str, str] = {}
    for queue in resources.QUEUES:
        fifo_attrs = {"FifoQueue": "true"} if queue.fifo else {}
        dlq_name = queue_name(prefix, queue, dlq=True)
        dlq_url = sqs.create_queue(
            QueueName=dlq_name,
            Attributes={**fifo_attrs, "MessageRetentionPeriod": str(14 * 86_400)},
        )["QueueUrl"]
        name = queue_name(prefix, queue)
        attributes = {
            **fifo_attrs,
            "VisibilityTimeout": str(overrides.get(queue.id, queue.visibility_timeout_s)),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": queue_arn(dlq_name),
                    "maxReceiveCount": queue.max_receive_count,
                }
            ),
        }
        try:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except sqs.exceptions.QueueNameExists:
            # Same name, other attributes (e.g. a test's visibility timeout): keep it.
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        urls[queue.id] = url
        arns[queue.id] = queue_arn(name)
        dlqs[queue.id] = dlq_url
    return urls, arns, dlqs


def provision(
    dynamodb: Any,
    sqs: Any,
    prefix: str = "seg-local",
    visibility_timeout_s: Mapping[str, int] | None = None,
) -> Provisioned:
    tables = create_tables(dynamodb, prefix)
    urls, arns, dlqs = create_queues(sqs, prefix, visibility_timeout_s)
    return Provisioned(tables=tables, queues=urls, queue_arns=arns, dlqs=dlqs)
