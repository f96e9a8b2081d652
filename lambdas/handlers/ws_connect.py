"""WebSocket ``$connect``: authenticate the gateway node's cluster credential
(``Authorization: Bearer``) and record its connection under its cluster and node id
(header ``X-SEG-Node-Id`` or query ``node_id``). Answers 200, or refuses with 400
(malformed), 401 (missing, malformed or unknown credential) or 403 (revoked); a refused
credential is marked with ``seg_contract.http.CREDENTIAL_REJECTED_HEADER``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from lambdas.composition import Adapters
from lambdas.domain.errors import Forbidden, InvalidInput, Unauthenticated
from lambdas.handlers import write_side
from lambdas.handlers.ws_events import WebSocketEvent, response
from lambdas.usecases.connections import connect
from lambdas.usecases.gateway_auth import (
    CREDENTIAL_REJECTIONS,
    authenticate_gateway,
    gateway_token,
)
from seg_contract.http import (
    CREDENTIAL_REJECTED_HEADER,
    CREDENTIAL_REJECTED_VALUE,
    NODE_ID_HEADER,
    NODE_ID_QUERY,
)

logger = Logger(service="ws_connect")
metrics = Metrics(namespace="SEG", service="ws_connect")
tracer = Tracer(service="ws_connect")
write_side.share_log_config(logger)

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - tests replace it


@cache
def ports() -> Adapters:
    return write_side.adapters()


def _refuse(status: int, detail: str, *, rejected: bool = False) -> dict[str, Any]:
    metrics.add_metric(name="ConnectionsRefused", unit=MetricUnit.Count, value=1)
    logger.warning("connection refused", extra={"status": status, "detail": detail})
    headers = {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE} if rejected else None
    return response(status, detail, headers)


@logger.inject_lambda_context(clear_state=True, correlation_id_path="requestContext.connectionId")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        parsed = WebSocketEvent.model_validate(event)
    except ValidationError:
        return _refuse(400, "malformed $connect event")
    p = ports()
    try:
        token = gateway_token(parsed.header("authorization"))
        connection = connect(
            token,
            parsed.header(NODE_ID_HEADER) or parsed.query.get(NODE_ID_QUERY),
            parsed.request_context.connection_id,
            authenticate=lambda presented: authenticate_gateway(presented, p.credentials),
            connections=p.connections,
            now=clock(),
        )
    except Unauthenticated as exc:
        return _refuse(401, exc.detail, rejected=isinstance(exc, CREDENTIAL_REJECTIONS))
    except Forbidden as exc:
        return _refuse(403, exc.detail, rejected=isinstance(exc, CREDENTIAL_REJECTIONS))
    except InvalidInput as exc:
        return _refuse(400, exc.detail)
    metrics.add_metric(name="ConnectionsAccepted", unit=MetricUnit.Count, value=1)
    logger.info(
        "gateway node connected",
        extra={"cluster_id": connection.cluster_id, "node_id": connection.node_id},
    )
    return response(200)
