"""Roster compactor (scheduled, one at a time): folds the roster journal into a new
snapshot that warm API functions load (``lambdas.usecases.roster.compact``)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers import write_side
from lambdas.usecases.roster import compact

logger = Logger(service="roster_compactor")
metrics = Metrics(namespace="SEG", service="roster_compactor")
tracer = Tracer(service="roster_compactor")
write_side.share_log_config(logger)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    a = write_side.adapters()
    result = compact(
        snapshots=a.roster,
        journal=a.roster,
        view=a.email_devices,
        force_rebuild=bool(event.get("rebuild")) if isinstance(event, dict) else False,
    )
    metrics.add_metric(name="RosterRows", unit=MetricUnit.Count, value=result.head.rows)
    metrics.add_metric(name="RosterJournalEntries", unit=MetricUnit.Count, value=result.replayed)
    return {
        "rows": result.head.rows,
        "chunks": result.head.chunks,
        "rebuilt": result.rebuilt,
        "journal_entries": result.replayed,
        "watermark": result.head.watermark,
    }
