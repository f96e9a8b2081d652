"""WebSocket ``$connect``: authenticate the gateway node's cluster credential
(``Authorization: Bearer``) and record its connection under its cluster and node id
(header ``X-SEG-Node-Id`` or query ``node_id``). Answers 200, or refuses with 400
(malformed), 401 (missing, malformed or unknown credential) or 403 (revoked); a refused
credential is marked with ``seg_contract.http.CREDENTIAL_REJECTED_HEADER``
(``lambdas.handlers.skeleton.websocket_refusal``)."""

from __future__ import annotations

from datetime import datetime

from lambdas.composition import Adapters
from lambdas.handlers.skeleton import LambdaFunction, adapters
from lambdas.handlers.ws_events import WebSocketEvent
from lambdas.usecases.connections import connect
from lambdas.usecases.gateway_auth import authenticate_gateway, gateway_token
from seg_contract.http import NODE_ID_HEADER, NODE_ID_QUERY

function = LambdaFunction("ws_connect", adapters)


@function.websocket(
    malformed="malformed $connect event",
    refused="connection refused",
    refused_metric="ConnectionsRefused",
)
def handler(event: WebSocketEvent, a: Adapters, now: datetime) -> None:
    connection = connect(
        gateway_token(event.header("authorization")),
        event.header(NODE_ID_HEADER) or event.query.get(NODE_ID_QUERY),
        event.request_context.connection_id,
        authenticate=lambda presented: authenticate_gateway(presented, a.credentials),
        connections=a.connections,
        now=now,
    )
    function.count("ConnectionsAccepted")
    function.logger.info(
        "gateway node connected",
        extra={"cluster_id": connection.cluster_id, "node_id": connection.node_id},
    )
