"""Scheduled check-in (EventBridge schedule): the seed's Scheduler. Queues every
enrolled device whose last check-in is older than the compliance policy allows, so the
compliance reader blocks it (``lambdas.usecases.checkin``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.composition import Adapters
from lambdas.handlers import write_side
from lambdas.usecases.checkin import sweep_stale_checkins

logger = Logger(service="scheduled_checkin")
metrics = Metrics(namespace="SEG", service="scheduled_checkin")
tracer = Tracer(service="scheduled_checkin")
write_side.share_log_config(logger)

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - tests replace it


@cache
def ports() -> Adapters:
    return write_side.adapters()


@logger.inject_lambda_context(clear_state=True, correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The event (an EventBridge "Scheduled Event") carries nothing we need but its id.
    p = ports()
    report = sweep_stale_checkins(
        devices=p.devices, clusters=p.clusters, queue=p.compliance_queue, now=clock()
    )
    metrics.add_metric(name="StaleDevices", unit=MetricUnit.Count, value=report.stale)
    metrics.add_metric(name="DevicesQueued", unit=MetricUnit.Count, value=report.queued)
    metrics.add_metric(name="ClustersSeeded", unit=MetricUnit.Count, value=report.clusters_seeded)
    result = {
        "stale": report.stale,
        "queued": report.queued,
        "clusters_seeded": report.clusters_seeded,
    }
    logger.info("check-in sweep done", extra=result)
    return result
