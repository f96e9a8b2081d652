"""WebSocket ``$default``: the gateway's keepalive (``seg_contract.GatewayKeepalive``).
Re-checks the connection's credential, advances the cluster's committed version, checks
the node's policy digest, records the node's state and answers with
``seg_contract.PushPong`` (the committed version and the digest verdict) through the
management API (``lambdas.usecases.connections``), signed. A message on a connection we
no longer know (expired, closed) or whose credential was revoked is refused with 403 and
the connection is closed; a message that is not a keepalive with 400. Metrics:
``Keepalives``, ``MessagesRejected``, ``DigestChecks``, ``DigestMismatches``,
``NodesRefusingPolicy`` (a keepalive from a node that refused signed policy input since
it started: an alarm on it catches a man in the middle or a key a node does not trust)
and ``PongsUnsigned`` (no pong sent: it could not be signed)."""

from __future__ import annotations

from datetime import datetime

from lambdas.composition import Adapters
from lambdas.domain.policy_log import DigestVerdict
from lambdas.handlers.skeleton import LambdaFunction, adapters
from lambdas.handlers.ws_events import WebSocketEvent
from lambdas.usecases.connections import keepalive

function = LambdaFunction("ws_default", adapters)


@function.websocket(
    malformed="malformed WebSocket message event",
    refused="keepalive refused",
    refused_metric="MessagesRejected",
)
def handler(event: WebSocketEvent, a: Adapters, now: datetime) -> None:
    answered = keepalive(
        event.request_context.connection_id,
        event.text(),
        connections=a.connections,
        nodes=a.gateway_nodes,
        clusters=a.clusters,
        log=a.policy_log,
        credentials=a.credentials,
        poster=a.poster,
        signing=a.policy_signing,
        now=now,
    )
    function.count("Keepalives")
    if answered.digest_check is not DigestVerdict.UNCHECKED:
        function.count("DigestChecks")
    if answered.digest_check is DigestVerdict.DIVERGED:
        function.count("DigestMismatches")
    if answered.report.policy_rejections:
        function.count("NodesRefusingPolicy")
    if answered.push.unsigned:
        function.count("PongsUnsigned")
    function.logger.info(
        "keepalive answered",
        extra={
            "cluster_id": answered.cluster_id,
            "cluster_version": answered.version,
            "digest_check": answered.digest_check.value,
            "checked_version": answered.checked_version,
            "pong_sent": bool(answered.push.delivered),
        },
    )
