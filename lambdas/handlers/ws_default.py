"""WebSocket ``$default``: the gateway's keepalive (``seg_contract.GatewayKeepalive``).
Re-checks the connection's credential, advances the cluster's committed version, checks
the node's policy digest, records the node's state and answers with
``seg_contract.PushPong`` (the committed version and the digest verdict) through the
management API (``lambdas.usecases.connections``), signed. A message on a connection we
no longer know (expired, closed) or whose credential was revoked is refused with 403 and
the connection is closed. Metrics: ``DigestChecks``, ``DigestMismatches``,
``NodesRefusingPolicy`` (a keepalive from a node that refused signed policy input since
it started: an alarm on it catches a man in the middle or a key a node does not trust)
and ``PongsUnsigned`` (no pong sent: it could not be signed)."""

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
from lambdas.domain.errors import Forbidden, InvalidInput
from lambdas.domain.policy_log import DigestVerdict
from lambdas.handlers import write_side
from lambdas.handlers.ws_events import WebSocketEvent, response
from lambdas.usecases.connections import keepalive

logger = Logger(service="ws_default")
metrics = Metrics(namespace="SEG", service="ws_default")
tracer = Tracer(service="ws_default")
write_side.share_log_config(logger)

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - tests replace it


@cache
def ports() -> Adapters:
    return write_side.adapters()


@logger.inject_lambda_context(clear_state=True, correlation_id_path="requestContext.connectionId")
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        parsed = WebSocketEvent.model_validate(event)
    except ValidationError:
        metrics.add_metric(name="MessagesRejected", unit=MetricUnit.Count, value=1)
        return response(400, "malformed WebSocket message event")
    p = ports()
    connection_id = parsed.request_context.connection_id
    try:
        answered = keepalive(
            connection_id,
            parsed.text(),
            connections=p.connections,
            nodes=p.gateway_nodes,
            clusters=p.clusters,
            log=p.policy_log,
            credentials=p.credentials,
            poster=p.poster,
            signing=p.policy_signing,
            now=clock(),
        )
    except Forbidden as exc:
        metrics.add_metric(name="MessagesRejected", unit=MetricUnit.Count, value=1)
        logger.warning("keepalive refused, connection closed", extra={"detail": exc.detail})
        return response(403, exc.detail)
    except InvalidInput as exc:
        metrics.add_metric(name="MessagesRejected", unit=MetricUnit.Count, value=1)
        logger.warning("invalid gateway message", extra={"detail": exc.detail})
        return response(400, exc.detail)
    metrics.add_metric(name="Keepalives", unit=MetricUnit.Count, value=1)
    if answered.digest_check is not DigestVerdict.UNCHECKED:
        metrics.add_metric(name="DigestChecks", unit=MetricUnit.Count, value=1)
    if answered.digest_check is DigestVerdict.DIVERGED:
        metrics.add_metric(name="DigestMismatches", unit=MetricUnit.Count, value=1)
    if answered.report.policy_rejections:
        metrics.add_metric(name="NodesRefusingPolicy", unit=MetricUnit.Count, value=1)
    if answered.push.unsigned:
        metrics.add_metric(name="PongsUnsigned", unit=MetricUnit.Count, value=1)
    logger.info(
        "keepalive answered",
        extra={
            "cluster_id": answered.cluster_id,
            "cluster_version": answered.version,
            "digest_check": answered.digest_check.value,
            "checked_version": answered.checked_version,
            "pong_sent": bool(answered.push.delivered),
        },
    )
    return response(200)
