"""The HTTP API on Lambda: the FastAPI app behind Mangum (API Gateway HTTP API, payload
format 2.0). ``lifespan="off"``: the app has no startup work, and Mangum would otherwise
run startup and shutdown around every invocation.

The app (and its boto3 clients) is built on the first invocation and reused while the
container is warm.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from lambdas.api.app import create_app

logger = Logger(service="api")
metrics = Metrics(namespace="SEG", service="api")
tracer = Tracer(service="api")


@cache
def _mangum() -> Mangum:
    return Mangum(create_app(), lifespan="off")


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Mangum's own LambdaContext protocol is structurally narrower than powertools'.
    lambda_context: Any = context
    response: dict[str, Any] = dict(_mangum()(event, lambda_context))
    status = int(response.get("statusCode", 500))
    metrics.add_metric(
        name="ClientErrors" if 400 <= status < 500 else "ServerErrors" if status >= 500 else "Ok",
        unit=MetricUnit.Count,
        value=1,
    )
    logger.info(
        "request",
        extra={
            "method": event.get("requestContext", {}).get("http", {}).get("method"),
            "path": event.get("rawPath"),
            "status": status,
        },
    )
    return response
