"""Notice sender (SQS-triggered): e-mails the user of a device that became blocked or
quarantined (``lambdas.usecases.notices``). A record whose send fails is reported in
``batchItemFailures`` alone and retried by SQS (the marker lets only one attempt send).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.composition import Adapters
from lambdas.handlers import write_side
from lambdas.usecases.notices import NoticeMessage, send_notice

logger = Logger(service="notice_sender")
metrics = Metrics(namespace="SEG", service="notice_sender")
tracer = Tracer(service="notice_sender")
write_side.share_log_config(logger)
processor = BatchProcessor(event_type=EventType.SQS)

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - tests replace it


@cache
def _adapters() -> Adapters:
    return write_side.adapters()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    message = NoticeMessage.model_validate_json(record.body)
    a = _adapters()
    sender = a.settings.notice_sender
    result = send_notice(
        message,
        store=a.notices,
        mailer=a.mailer if sender else None,
        sender=sender,
        now=clock(),
    )
    logger.info("notice handled", extra={"state": message.state, "outcome": result.outcome})
    if result.outcome == "sent":
        metrics.add_metric(name="NoticesSent", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
