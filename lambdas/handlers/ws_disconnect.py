"""WebSocket ``$disconnect``: forget the closed connection (idempotent; API Gateway
delivers it at most once and sometimes not at all, which the table's TTL covers)."""

from __future__ import annotations

from datetime import datetime

from lambdas.handlers.skeleton import LambdaFunction, adapters
from lambdas.handlers.ws_events import WebSocketEvent
from lambdas.ports import ConnectionStore
from lambdas.usecases.connections import disconnect

function = LambdaFunction("ws_disconnect", lambda: adapters().connections)


@function.websocket(
    malformed="malformed $disconnect event",
    refused="disconnect refused",
    refused_metric="MalformedEvents",
)
def handler(event: WebSocketEvent, connections: ConnectionStore, now: datetime) -> None:
    known = disconnect(event.request_context.connection_id, connections=connections)
    function.count("ConnectionsClosed")
    function.logger.info(
        "gateway node disconnected",
        extra={
            "cluster_id": known.cluster_id if known else None,
            "node_id": known.node_id if known else None,
            "reason": event.request_context.disconnect_reason,
        },
    )
