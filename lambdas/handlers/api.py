"""The HTTP API on Lambda: the FastAPI app behind Mangum (API Gateway HTTP API, payload
format 2.0). ``lifespan="off"``: the app has no startup work, and Mangum would otherwise
run startup and shutdown around every invocation.

The app (and its boto3 clients) is the function's composition root: built on the first
invocation and reused while the container is warm. Its errors are mapped to HTTP
statuses inside the app (``lambdas.api.errors``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from lambdas.api.app import create_app
from lambdas.handlers.skeleton import LambdaFunction

function = LambdaFunction("api", lambda: Mangum(create_app(), lifespan="off"))


@function.entry(correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Mangum's own LambdaContext protocol is structurally narrower than powertools'.
    lambda_context: Any = context
    response: dict[str, Any] = dict(function.root()(event, lambda_context))
    status = int(response.get("statusCode", 500))
    function.count(
        "ClientErrors" if 400 <= status < 500 else "ServerErrors" if status >= 500 else "Ok"
    )
    function.logger.info(
        "request",
        extra={
            "method": event.get("requestContext", {}).get("http", {}).get("method"),
            "path": event.get("rawPath"),
            "status": status,
        },
    )
    return response
