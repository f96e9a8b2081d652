"""The gateway's WebSocket connection: connect (authenticate, record), keepalive
(re-check the credential, advance the committed version, check the node's policy
digest, record the node's state, answer), disconnect (forget).

A node only ever receives its own cluster's pushes because the connection is recorded
under the cluster its credential names, and pushes are fanned out by cluster.

A keepalive is the control plane's half of anti-entropy. It answers with the cluster's
committed version W (a node that missed a push sees W above its applied version and
fetches the delta) and with the verdict on the digest the node reported for its applied
version V: ``in_sync`` or ``diverged`` when the control plane keeps the digest of V (W or
one of the recent versions; ``lambdas.domain.policy_log.check_digest``), ``unchecked``
otherwise. A node told ``diverged`` replaces its policy with a snapshot, so divergence
from any cause is gone within one report interval. It also re-checks the connection's
credential: a connection opened with a credential revoked since (even one that the
revocation's fan-out missed) is told ``revoked`` and closed.

Every answer is signed (``lambdas.usecases.signed_messages``): the pong is the node's
proof that its policy is still current (its freshness comes from the pong's signed issue
time), and one signed pong is shared by every node told the same thing within a minute.
When the pong cannot be signed nothing is sent; the node misses its pong deadline and
reconnects, as with any control plane that does not answer."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from pydantic import ValidationError

from lambdas.domain.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PushFailed,
    SigningUnavailable,
    validation_problems,
)
from lambdas.domain.gateway_nodes import NodeReport
from lambdas.domain.policy_log import DigestVerdict, check_digest
from lambdas.domain.records import Connection
from lambdas.ports import (
    ClusterCredentialStore,
    ClusterStore,
    ConnectionPoster,
    ConnectionStore,
    GatewayNodeStore,
    PolicyLog,
)
from lambdas.usecases.gateway_auth import GatewayPrincipal
from lambdas.usecases.gateway_nodes import record_keepalive
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.policy_versions import advance
from lambdas.usecases.push import PushReport, close, post_frame, send_to
from lambdas.usecases.signed_messages import signed_pong
from seg_contract import GatewayKeepalive, PushRevoked
from seg_contract.http import NODE_ID_HEADER, NODE_ID_QUERY
from seg_contract.models import GATEWAY_MESSAGE

logger = logging.getLogger(__name__)

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class Answered:
    """What a keepalive was answered with (the pong's content) and what became of it."""

    cluster_id: str
    version: int  # the committed version W the pong names
    digest_check: DigestVerdict
    checked_version: int
    report: NodeReport
    push: PushReport = field(default_factory=PushReport)


def validate_node_id(node_id: str | None) -> str:
    if not node_id:
        raise InvalidInput(f"missing node id (header {NODE_ID_HEADER} or query {NODE_ID_QUERY})")
    if not _NODE_ID.match(node_id):
        raise InvalidInput(
            "node id must be 1-128 characters: letters, digits, '.', '_', ':' or '-'"
        )
    return node_id


def connect(
    token: str,
    node_id: str | None,
    connection_id: str,
    *,
    authenticate: Callable[[str], GatewayPrincipal],
    connections: ConnectionStore,
    now: datetime,
) -> Connection:
    """Authenticate the node's credential and record its connection. Raises
    ``Unauthenticated`` / ``Forbidden`` (from ``authenticate``) and ``InvalidInput``."""
    principal = authenticate(token)
    node = validate_node_id(node_id)
    connection = Connection(
        connection_id=connection_id,
        cluster_id=principal.cluster_id,
        node_id=node,
        key_id=principal.key_id,
        connected_at=now,
    )
    connections.put(connection)
    logger.info(
        "gateway connected: cluster=%s node=%s key=%s connection=%s",
        connection.cluster_id,
        node,
        principal.key_id,
        connection_id,
    )
    return connection


def disconnect(connection_id: str, *, connections: ConnectionStore) -> Connection | None:
    """Forget a closed connection (idempotent); return what it was, if known."""
    connection = connections.get(connection_id)
    connections.delete(connection_id)
    return connection


def parse_keepalive(body: str | None) -> GatewayKeepalive:
    if not body:
        raise InvalidInput("empty message: expected a keepalive")
    try:
        return GATEWAY_MESSAGE.validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(f"invalid gateway message: {validation_problems(exc)}") from exc


def _closed(connection_id: str, poster: ConnectionPoster, detail: str) -> Forbidden:
    """Close a connection we will not serve (best effort) and say why."""
    try:
        poster.disconnect(connection_id)
    except PushFailed:
        logger.warning("could not close connection %s", connection_id)
    return Forbidden(detail)


def _credential_rejected(
    connection: Connection,
    *,
    credentials: ClusterCredentialStore,
    connections: ConnectionStore,
    poster: ConnectionPoster,
    signing: PolicySigning,
    now: datetime,
) -> Forbidden | None:
    """Is the connection's credential still valid? If not (revoked, or gone), tell the
    node, close and forget the connection, and return the error to raise."""
    stored = credentials.get_credential(connection.cluster_id, connection.key_id)
    if stored is not None and not stored.revoked:
        return None
    send_to(
        [connection],
        PushRevoked(cluster_id=connection.cluster_id),
        connections=connections,
        poster=poster,
        signing=signing,
        now=now,
    )
    close(connection.connection_id, connections=connections, poster=poster)
    logger.warning(
        "keepalive with a revoked credential: cluster=%s node=%s key=%s connection=%s",
        connection.cluster_id,
        connection.node_id,
        connection.key_id,
        connection.connection_id,
    )
    return Forbidden("gateway credential revoked")


def keepalive(
    connection_id: str,
    body: str | None,
    *,
    connections: ConnectionStore,
    nodes: GatewayNodeStore,
    clusters: ClusterStore,
    log: PolicyLog,
    credentials: ClusterCredentialStore,
    poster: ConnectionPoster,
    signing: PolicySigning,
    now: datetime,
) -> Answered:
    """Answer a keepalive (see the module doc). Raises ``Forbidden`` (connection
    unknown, i.e. closed, expired or revoked; its credential revoked; or its cluster
    gone: the connection is closed too, so the node reconnects and meets ``$connect``)
    and ``InvalidInput`` (not a keepalive, or another node's id)."""
    connection = connections.get(connection_id)
    if connection is None:
        raise _closed(connection_id, poster, "unknown connection: reconnect")
    message = parse_keepalive(body)
    if message.node_id != connection.node_id:
        raise InvalidInput(
            f"keepalive names node {message.node_id!r} but this connection is "
            f"node {connection.node_id!r}"
        )
    rejected = _credential_rejected(
        connection,
        credentials=credentials,
        connections=connections,
        poster=poster,
        signing=signing,
        now=now,
    )
    if rejected is not None:
        raise rejected
    try:
        cluster = advance(connection.cluster_id, clusters=clusters, log=log, now=now)
    except NotFound:
        raise _closed(connection_id, poster, "the connection's cluster no longer exists") from None
    verdict = check_digest(message.digest, message.policy_version, cluster.watermark)
    report = record_keepalive(nodes, connection.cluster_id, message, now, verdict)
    if verdict is DigestVerdict.DIVERGED:
        logger.warning(
            "policy digest mismatch: cluster=%s node=%s version=%d",
            connection.cluster_id,
            connection.node_id,
            message.policy_version,
        )
    if message.policy_rejections:
        logger.warning(
            "node refused signed policy: cluster=%s node=%s refusals=%d last=%s",
            connection.cluster_id,
            connection.node_id,
            message.policy_rejections,
            message.last_rejection,
        )
    answered = Answered(
        cluster_id=connection.cluster_id,
        version=cluster.committed_version,
        digest_check=verdict,
        checked_version=message.policy_version,
        report=report,
    )
    try:
        pong = signed_pong(
            connection.cluster_id,
            cluster.committed_version,
            digest_check=verdict.value,
            checked_version=message.policy_version,
            signing=signing,
            now=now,
        )
    except SigningUnavailable as exc:
        logger.error(
            "pong not sent, it could not be signed: cluster=%s node=%s error=%s",
            connection.cluster_id,
            connection.node_id,
            exc.detail,
        )
        return replace(answered, push=PushReport(unsigned=1))
    data = pong.envelope().model_dump_json().encode()
    push = post_frame([connection], data, connections=connections, poster=poster)
    return replace(answered, push=push)
