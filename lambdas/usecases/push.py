"""Publish a push message to every open connection of a cluster.

The seed's known flaw was that behind a load balancer only one node got a single-device
update; here every connection of the cluster gets every push. A connection API Gateway
reports gone is forgotten at once; any other failure is counted and left for the node's
next delta (its keepalive pong carries the version, so it notices what it missed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from lambdas.domain.errors import ConnectionGone, PushFailed
from lambdas.domain.records import Connection
from lambdas.ports import ConnectionPoster, ConnectionStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushReport:
    delivered: int = 0
    gone: int = 0
    failed: int = 0

    def __add__(self, other: PushReport) -> PushReport:
        return PushReport(
            self.delivered + other.delivered, self.gone + other.gone, self.failed + other.failed
        )


def publish(
    cluster_id: str,
    message: BaseModel,
    *,
    connections: ConnectionStore,
    poster: ConnectionPoster,
    key_id: str | None = None,
) -> PushReport:
    """Post ``message`` (a ``seg_contract`` push model) to every connection of the
    cluster (only those opened with ``key_id`` when given)."""
    targets = [
        c for c in connections.list_for_cluster(cluster_id) if key_id is None or c.key_id == key_id
    ]
    return send_to(targets, message, connections=connections, poster=poster)


def send_to(
    targets: Iterable[Connection],
    message: BaseModel,
    *,
    connections: ConnectionStore,
    poster: ConnectionPoster,
) -> PushReport:
    data = message.model_dump_json().encode("utf-8")
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
