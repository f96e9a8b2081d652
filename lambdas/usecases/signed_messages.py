"""The control plane's policy messages, signed (``seg_contract.signing``): one function
per thing a gateway receives, so every route and every fan-out signs the same way.

- HTTP: ``signed_snapshot``, ``signed_delta``, ``PolicySigning.confirm`` (the 304) and
  ``PolicySigning.key_set`` return a ``SignedPayload``; the route answers with its
  ``payload`` as the body and its ``headers()``.
- WebSocket: ``push_frame`` signs a push once and returns the bytes to post to every
  connection of the cluster (never one signature per connection); ``signed_pong`` reuses
  one signature for every node that gets the same answer within the reuse window.
"""

from __future__ import annotations

from datetime import datetime

from lambdas.usecases.policy_signing import PolicySigning
from seg_contract import (
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushMessage,
    PushPong,
    PushResync,
    PushRevoked,
)
from seg_contract.models import DigestCheck
from seg_contract.signing import Kind, SignedPayload

_KINDS: dict[type, Kind] = {
    PushChange: Kind.CHANGE,
    PushResync: Kind.RESYNC,
    PushRevoked: Kind.REVOKED,
    PushPong: Kind.PONG,
}


def signed_snapshot(
    snapshot: PolicySnapshot, signing: PolicySigning, now: datetime
) -> SignedPayload:
    return signing.sign(
        snapshot.cluster_id,
        Kind.SNAPSHOT,
        snapshot.version,
        snapshot.model_dump_json().encode(),
        now,
    )


def signed_delta(delta: PolicyDelta, signing: PolicySigning, now: datetime) -> SignedPayload:
    return signing.sign(
        delta.cluster_id,
        Kind.DELTA,
        delta.version,
        delta.model_dump_json().encode(),
        now,
        since_version=delta.since_version,
    )


def signed_push(message: PushMessage, signing: PolicySigning, now: datetime) -> SignedPayload:
    """A push with its statement: kind from its type, version from the message (a
    ``revoked`` push states none: 0)."""
    version = message.version if not isinstance(message, PushRevoked) else 0
    return signing.sign(
        message.cluster_id,
        _KINDS[type(message)],
        version,
        message.model_dump_json().encode(),
        now,
    )


def push_frame(message: PushMessage, signing: PolicySigning, now: datetime) -> bytes:
    """The bytes to post to every connection: the ``signed`` envelope of the push."""
    return signed_push(message, signing, now).envelope().model_dump_json().encode()


def signed_pong(
    cluster_id: str,
    version: int,
    *,
    digest_check: DigestCheck,
    checked_version: int,
    signing: PolicySigning,
    now: datetime,
) -> SignedPayload:
    """The answer to a keepalive. Every node of the cluster told the same thing (same
    version, verdict and checked version) within the reuse window gets the same signed
    pong, whose ``server_time`` is its issue time."""

    def make(at: datetime) -> bytes:
        pong = PushPong(
            cluster_id=cluster_id,
            version=version,
            server_time=at,
            digest_check=digest_check,
            checked_version=checked_version,
        )
        return pong.model_dump_json().encode()

    return signing.sign_reusable(
        ("pong", digest_check, checked_version),
        cluster_id=cluster_id,
        kind=Kind.PONG,
        version=version,
        make_payload=make,
        now=now,
    )
