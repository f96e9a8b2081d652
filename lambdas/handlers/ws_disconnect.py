"""WebSocket ``$disconnect``: forget the closed connection (idempotent; API Gateway
delivers it at most once and sometimes not at all, which the table's TTL covers)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from lambdas.handlers import write_side
from lambdas.handlers.ws_events import WebSocketEvent, response
from lambdas.ports import ConnectionStore
from lambdas.usecases.connections import disconnect

logger = Logger(service="ws_disconnect")
metrics = Metrics(namespace="SEG", service="ws_disconnect")
tracer = Tracer(service="ws_disconnect")
write_side.share_log_config(logger)


@cache
def connections() -> ConnectionStore:
    return write_side.adapters().connections


@logger.inject_lambda_context(clear_state=True, correlation_id_path="requestContext.connectionId")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        parsed = WebSocketEvent.model_validate(event)
    except ValidationError:
        logger.warning("malformed $disconnect event")
        metrics.add_metric(name="MalformedEvents", unit=MetricUnit.Count, value=1)
        return response(400, "malformed $disconnect event")
    known = disconnect(parsed.request_context.connection_id, connections=connections())
    metrics.add_metric(name="ConnectionsClosed", unit=MetricUnit.Count, value=1)
    logger.info(
        "gateway node disconnected",
        extra={
            "cluster_id": known.cluster_id if known else None,
            "node_id": known.node_id if known else None,
            "reason": parsed.request_context.disconnect_reason,
        },
    )
    return response(200)
