"""SQS event sources: each function declaring ``consumes`` reads its queue in batches.

Partial batch responses are on (``ReportBatchItemFailures``): a handler returns the ids
of the messages it could not process and only those are retried, then dead-lettered.
"""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas import resources


class Readers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: dict[str, lambda_.Function],
        queues: dict[str, sqs.Queue],
    ) -> None:
        super().__init__(scope, construct_id)
        for declared in resources.FUNCTIONS:
            if declared.trigger is not resources.Trigger.SQS:
                continue
            if declared.consumes is None:
                raise ValueError(f"function {declared.id} is triggered by SQS but consumes none")
            # The event source grants the function receive/delete/change-visibility on
            # this queue only.
            functions[declared.id].add_event_source(
                sources.SqsEventSource(
                    queues[declared.consumes],
                    batch_size=declared.batch_size,
                    report_batch_item_failures=True,
                )
            )
