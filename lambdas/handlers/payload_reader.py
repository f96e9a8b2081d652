"""Payload reader (SQS-triggered): access-event batches -> the dashboard's view.

The seed's MEG Queue Reader, payload half. Each record is one ``PayloadMessage``; a
record that does not parse or cannot be written is reported in ``batchItemFailures``
alone (SQS retries it and, after ``max_receive_count``, moves it to the DLQ) while the
rest of the batch succeeds. Applying a record twice changes nothing (newest-wins rows,
fingerprinted counters, history merged by event id, notice markers), so redelivery is
safe.
"""

from __future__ import annotations

from datetime import datetime

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

from lambdas.handlers.skeleton import LambdaFunction, adapters
from lambdas.usecases.access_events import PayloadMessage, PayloadStores, apply_payload

function = LambdaFunction("payload_reader", lambda: adapters().payload_stores)


@function.sqs(PayloadMessage.model_validate_json, BatchProcessor(event_type=EventType.SQS))
def handler(message: PayloadMessage, stores: PayloadStores, now: datetime) -> None:
    outcome = apply_payload(message, stores)
    requests = sum(e.count for e in message.batch.events)  # a folded event counts its count
    function.logger.info(
        "applied access events",
        extra={
            "cluster_id": message.cluster_id,
            "events": len(message.batch.events),
            "requests": requests,
            "rows_written": outcome.rows_written,
            "notices_queued": outcome.notices_queued,
        },
    )
    function.count("AccessEvents", requests)
    function.count("NoticesQueued", outcome.notices_queued)
