"""Payload reader (SQS-triggered): access-event batches -> the dashboard's view.

The seed's MEG Queue Reader, payload half. Each record is one ``PayloadMessage``; a
record that does not parse or cannot be written is reported in ``batchItemFailures``
alone (SQS retries it and, after ``max_receive_count``, moves it to the DLQ) while the
rest of the batch succeeds. Applying a record twice changes nothing (newest-wins rows,
fingerprinted counters, history merged by event id, notice markers), so redelivery is
safe.
"""

from __future__ import annotations

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

from lambdas.handlers import write_side
from lambdas.usecases.access_events import PayloadMessage, PayloadStores, apply_payload

logger = Logger(service="payload_reader")
metrics = Metrics(namespace="SEG", service="payload_reader")
tracer = Tracer(service="payload_reader")
write_side.share_log_config(logger)
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def _ports() -> PayloadStores:
    """Built once per warm container (after the environment is in place)."""
    a = write_side.adapters()
    return PayloadStores(
        view=a.email_devices,
        nodes=a.gateway_nodes,
        journal=a.roster,
        history=a.access_history,
        notices=a.notices,
        notice_queue=a.notice_queue,
    )


@tracer.capture_method(capture_response=False, capture_error=False)
def record_handler(record: SQSRecord) -> None:
    message = PayloadMessage.model_validate_json(record.body)
    outcome = apply_payload(message, _ports())
    requests = sum(e.count for e in message.batch.events)  # a folded event counts its count
    logger.info(
        "applied access events",
        extra={
            "cluster_id": message.cluster_id,
            "events": len(message.batch.events),
            "requests": requests,
            "rows_written": outcome.rows_written,
            "notices_queued": outcome.notices_queued,
        },
    )
    metrics.add_metric(name="AccessEvents", unit=MetricUnit.Count, value=requests)
    metrics.add_metric(name="NoticesQueued", unit=MetricUnit.Count, value=outcome.notices_queued)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
