"""SQS queues, one per ``lambdas.resources.QUEUES`` declaration, each with its DLQ."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas import resources

DLQ_RETENTION = Duration.days(14)  # the SQS maximum: time to inspect and redrive


@dataclass(frozen=True)
class QueuePair:
    queue: sqs.Queue
    dead_letters: sqs.Queue


class Queues(Construct):
    """KMS-encrypted, TLS-only queues; after ``max_receive_count`` failed receives a
    message moves to the queue's DLQ (a FIFO DLQ for a FIFO queue, as SQS requires)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.pairs: dict[str, QueuePair] = {}
        for declared in resources.QUEUES:
            fifo = True if declared.fifo else None
            dead_letters = sqs.Queue(
                self,
                f"{declared.id}-dlq",
                fifo=fifo,
                retention_period=DLQ_RETENTION,
                encryption=sqs.QueueEncryption.KMS_MANAGED,
                enforce_ssl=True,
            )
            queue = sqs.Queue(
                self,
                declared.id,
                fifo=fifo,
                # Explicit deduplication ids win; identical bodies within 5 min are
                # dropped otherwise (a retried enqueue must not evaluate twice).
                content_based_deduplication=True if declared.fifo else None,
                visibility_timeout=Duration.seconds(declared.visibility_timeout_s),
                encryption=sqs.QueueEncryption.KMS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=sqs.DeadLetterQueue(
                    queue=dead_letters, max_receive_count=declared.max_receive_count
                ),
            )
            self.pairs[declared.id] = QueuePair(queue=queue, dead_letters=dead_letters)

    def queue(self, queue_id: str) -> sqs.Queue:
        return self.pairs[queue_id].queue
