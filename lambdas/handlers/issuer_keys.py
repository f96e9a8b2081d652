"""Scheduled refresh of token issuers' keys (EventBridge schedule): every cluster's Bearer
issuers are fetched from their ``jwks_uri`` again, and a cluster whose keys changed gets
a new settings version, pushed to its nodes (``lambdas.usecases.token_issuers``)."""

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
from lambdas.usecases.token_issuers import refresh_issuer_keys

logger = Logger(service="issuer_keys")
metrics = Metrics(namespace="SEG", service="issuer_keys")
tracer = Tracer(service="issuer_keys")
write_side.share_log_config(logger)

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - tests replace it


@cache
def ports() -> Adapters:
    return write_side.adapters()


@logger.inject_lambda_context(clear_state=True, correlation_id_path="id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The event (an EventBridge "Scheduled Event") carries nothing we need but its id.
    p = ports()
    report = refresh_issuer_keys(stores=p.versions, source=p.jwks, now=clock())
    metrics.add_metric(name="IssuerKeysChanged", unit=MetricUnit.Count, value=len(report.changed))
    metrics.add_metric(name="IssuerKeysFailed", unit=MetricUnit.Count, value=len(report.failed))
    result = {"clusters": report.clusters, "changed": report.changed, "failed": report.failed}
    logger.info("issuer keys refreshed", extra=result)
    return result
