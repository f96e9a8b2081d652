"""Publish a push message to every open connection of a cluster.

The seed's known flaw was that behind a load balancer only one node got a single-device
update; here every connection of the cluster gets every push. A connection API Gateway
reports gone is forgotten at once; any other failure is counted and left for the node's
next delta (its keepalive pong carries the version, so it notices what it missed).

Every push is signed once, before the fan-out (``signed_messages.push_frame``), and the
same bytes are posted to every connection. When it cannot be signed (no signing key,
KMS failing) nothing is sent: nodes never receive an unsigned push, and they catch up
through the next pong (which names the committed version) or their refresh. The caller
is not failed for it: what the push announces is already written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from lambdas.domain.errors import ConnectionGone, PushFailed, SigningUnavailable
from lambdas.domain.records import Connection
from lambdas.ports import ConnectionPoster, ConnectionStore
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.signed_messages import push_frame
from seg_contract import PushMessage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushReport:
    delivered: int = 0
    gone: int = 0
    failed: int = 0
    unsigned: int = 0  # connections not sent to because the push could not be signed

    def __add__(self, other: PushReport) -> PushReport:
        return PushReport(
            self.delivered + other.delivered,
            self.gone + other.gone,
            self.failed + other.failed,
            self.unsigned + other.unsigned,
        )


def publish(
    cluster_id: str,
    message: PushMessage,
    *,
    connections: ConnectionStore,
    poster: ConnectionPoster,
    signing: PolicySigning,
    now: datetime,
    key_id: str | None = None,
) -> PushReport:
    """Post ``message`` (a ``seg_contract`` push model), signed, to every connection of
    the cluster (only those opened with ``key_id`` when given)."""
    targets = [
        c for c in connections.list_for_cluster(cluster_id) if key_id is None or c.key_id == key_id
    ]
    return send_to(
        targets, message, connections=connections, poster=poster, signing=signing, now=now
    )


def send_to(
    targets: Iterable[Connection],
    message: PushMessage,
    *,
    connections: ConnectionStore,
    poster: ConnectionPoster,
    signing: PolicySigning,
    now: datetime,
) -> PushReport:
    targets = list(targets)
    if not targets:
        return PushReport()
    try:
        data = push_frame(message, signing, now)
    except SigningUnavailable as exc:
        logger.error(
            "push not sent, it could not be signed: cluster=%s type=%s connections=%d error=%s",
            message.cluster_id,
            message.type,
            len(targets),
            exc.detail,
        )
        return PushReport(unsigned=len(targets))
    return post_frame(targets, data, connections=connections, poster=poster)


def post_frame(
    targets: Iterable[Connection],
    data: bytes,
    *,
    connections: ConnectionStore,
    poster: ConnectionPoster,
) -> PushReport:
    """Post bytes already signed (``lambdas.usecases.signed_messages``) to each
    connection."""
    delivered = gone = failed = 0
    for connection in targets:
        try:
            poster.post(connection.connection_id, data)
            delivered += 1
        except ConnectionGone:
            connections.delete(connection.connection_id)
            gone += 1
            logger.info(
                "connection gone, forgotten: cluster=%s node=%s connection=%s",
                connection.cluster_id,
                connection.node_id,
                connection.connection_id,
            )
        except PushFailed as exc:
            failed += 1
            logger.warning(
                "push failed: cluster=%s node=%s connection=%s error=%s",
                connection.cluster_id,
                connection.node_id,
                connection.connection_id,
                exc,
            )
    return PushReport(delivered, gone, failed)


def close(connection_id: str, *, connections: ConnectionStore, poster: ConnectionPoster) -> None:
    """Close a connection (e.g. after its credential was revoked) and forget it; one that
    is gone already is closed too."""
    try:
        poster.disconnect(connection_id)
    except PushFailed as exc:
        logger.warning("could not close connection %s: %s", connection_id, exc)
    connections.delete(connection_id)
