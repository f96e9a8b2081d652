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

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.domain.messages import COMPLIANCE_MESSAGE
from lambdas.handlers import write_side
from lambdas.settings import load_settings
from lambdas.usecases.compliance import ComplianceStores, handle_message

logger = Logger(service="compliance_reader")
metrics = Metrics(namespace="SEG", service="compliance_reader")
tracer = Tracer(service="compliance_reader")
write_side.share_log_config(logger)
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# A batch whose every record failed is answered with every record listed, like any other
# partial failure, instead of an invocation error: SQS retries the same records either
# way, and a poison message alone in its batch should not count as a function error.
processor.raise_on_entire_batch_failure = False

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - tests replace it


@cache
def stores() -> ComplianceStores:
    """Built once per warm container (after the environment is in place)."""
    return write_side.compliance_stores(load_settings())


@tracer.capture_method(capture_response=False, capture_error=False)
def record_handler(record: SQSRecord) -> None:
    message = COMPLIANCE_MESSAGE.validate_json(record.body)
    logger.append_keys(message_type=message.type, sqs_message_id=record.message_id)
    outcome = handle_message(message, stores(), clock())
    metrics.add_metric(name="EntriesWritten", unit=MetricUnit.Count, value=len(outcome.written))
    metrics.add_metric(name="StaleWritesRefused", unit=MetricUnit.Count, value=outcome.refused)
    metrics.add_metric(
        name="PushesDelivered", unit=MetricUnit.Count, value=outcome.pushes.delivered
    )
    metrics.add_metric(name="ConnectionsGone", unit=MetricUnit.Count, value=outcome.pushes.gone)
    metrics.add_metric(name="PushesFailed", unit=MetricUnit.Count, value=outcome.pushes.failed)
    # Pushes never sent because they could not be signed (KMS failing): the entries are
    # written, so the record succeeds; nodes catch up through their pong or refresh.
    metrics.add_metric(name="PushesUnsigned", unit=MetricUnit.Count, value=outcome.pushes.unsigned)
    logger.info(
        "compliance message processed",
        extra={
            "entries_written": len(outcome.written),
            "refused": outcome.refused,
            "pushed": outcome.pushes.delivered,
        },
    )


@logger.inject_lambda_context(clear_state=True, correlation_id_path="Records[0].messageId")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    metrics.add_metric(name="MessagesReceived", unit=MetricUnit.Count, value=len(records))
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    failures = len(response.get("batchItemFailures", []))
    metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=failures)
    return dict(response)
