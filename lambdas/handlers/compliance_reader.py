"""Compliance reader (SQS FIFO-triggered): the seed's MEG Queue Reader, compliance half.

Each record is one ``lambdas.domain.messages.ComplianceMessage``; the use case
(``lambdas.usecases.compliance``) evaluates, versions, writes and pushes. Partial batch
failures with ``SqsFifoPartialProcessor(skip_group_on_error=True)``: a failed record is
reported in ``batchItemFailures`` together with the later records *of its own message
group* (processing them now would apply one device's changes out of order), while every
other group in the batch succeeds. SQS retries the failed ones and, after
``max_receive_count``, moves a poison message to the DLQ. A record processed twice writes
the same state under a newer version (see the use case), so redelivery is safe.
"""

from __future__ import annotations

from datetime import datetime

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor

from lambdas.domain.messages import COMPLIANCE_MESSAGE, ComplianceMessage
from lambdas.handlers.skeleton import LambdaFunction, adapters
from lambdas.usecases.compliance import ComplianceStores, handle_message

function = LambdaFunction("compliance_reader", lambda: adapters().compliance_stores)

processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# A batch whose every record failed is answered with every record listed, like any other
# partial failure, instead of an invocation error: SQS retries the same records either
# way, and a poison message alone in its batch should not count as a function error.
processor.raise_on_entire_batch_failure = False


@function.sqs(COMPLIANCE_MESSAGE.validate_json, processor)
def handler(message: ComplianceMessage, stores: ComplianceStores, now: datetime) -> None:
    function.logger.append_keys(message_type=message.type)
    outcome = handle_message(message, stores, now)
    function.count("EntriesWritten", len(outcome.written))
    function.count("StaleWritesRefused", outcome.refused)
    function.count("PushesDelivered", outcome.pushes.delivered)
    function.count("ConnectionsGone", outcome.pushes.gone)
    function.count("PushesFailed", outcome.pushes.failed)
    # Pushes never sent because they could not be signed (KMS failing): the entries are
    # written, so the record succeeds; nodes catch up through their pong or refresh.
    function.count("PushesUnsigned", outcome.pushes.unsigned)
    function.logger.info(
        "compliance message processed",
        extra={
            "entries_written": len(outcome.written),
            "refused": outcome.refused,
            "pushed": outcome.pushes.delivered,
        },
    )
