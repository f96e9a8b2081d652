"""Gateway routes: the cluster comes from the credential, never from the request, so a
gateway can only ever read its own cluster's policy and report into its own cluster.

The snapshot's ETag is ``"<cluster>-<W>"``, W being the cluster's committed version
(``lambdas.usecases.policy_versions``). A conditional GET is answered from the cluster
item alone (one read) when W has not moved, so the hourly bulk refresh of an unchanged
cluster costs one DynamoDB read per node.

Every policy answer is signed (``lambdas.usecases.signed_messages``; the statement and
signature travel in headers, the body is the payload as signed): the snapshot and the
delta, and the 304, whose ``confirm`` statement ("W is current") is what keeps a node's
policy fresh. The 304's confirmation is shared by every node of the cluster for up to a
minute (``PolicySigning.confirm``), so an unchanged cluster's refreshes cost no KMS
request each. Without a usable signing key these routes answer 503, never unsigned. A
410 stays unsigned: it only makes the node fetch the snapshot, which is verified.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from lambdas.api.auth import Gateway as Caller
from lambdas.api.deps import Clusters, Entries, Log, Now, Payloads, Signing
from lambdas.api.models import Accepted
from lambdas.usecases.access_events import accept_access_events
from lambdas.usecases.policy_sync import build_delta, snapshot_unless_held
from lambdas.usecases.signed_messages import signed_delta, signed_snapshot
from seg_contract import AccessEventBatch, PolicyDelta, PolicySnapshot
from seg_contract.http import DELTA_PATH, EVENTS_PATH, GATEWAY_PREFIX, POLICY_PATH

router = APIRouter(prefix=GATEWAY_PREFIX, tags=["gateway"])

_JSON = "application/json"


def etag(cluster_id: str, version: int) -> str:
    return f'"{cluster_id}-{version}"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 13.1.2: a list of entity tags (weak comparison) or ``*``."""
    if not if_none_match:
        return False
    candidates = [c.strip() for c in if_none_match.split(",")]
    return "*" in candidates or tag in {c.removeprefix("W/") for c in candidates}


@router.get(
    POLICY_PATH.removeprefix(GATEWAY_PREFIX),
    response_model=PolicySnapshot,
    summary="The cluster's full policy (ETag; 304 when If-None-Match is current)",
    responses={304: {"description": "Not modified"}},
)
def get_policy(
    *,
    caller: Caller,
    clusters: Clusters,
    entries: Entries,
    log: Log,
    signing: Signing,
    now: Now,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    version, snapshot = snapshot_unless_held(
        caller.cluster_id,
        lambda held: _matches(if_none_match, etag(caller.cluster_id, held)),
        clusters=clusters,
        entries=entries,
        log=log,
        now=now,
    )
    tag = etag(caller.cluster_id, version)
    if snapshot is None:
        confirmed = signing.confirm(caller.cluster_id, version, now)
        return Response(
            status_code=status.HTTP_304_NOT_MODIFIED,
            headers={"ETag": tag, **confirmed.headers()},
        )
    signed = signed_snapshot(snapshot, signing, now)
    return Response(signed.payload, media_type=_JSON, headers={"ETag": tag, **signed.headers()})


@router.get(
    DELTA_PATH.removeprefix(GATEWAY_PREFIX),
    response_model=PolicyDelta,
    summary="The cluster's changes after version `since` (410: fetch the snapshot)",
    responses={410: {"description": "Too old: fetch the full snapshot"}},
)
def get_delta(
    *,
    caller: Caller,
    clusters: Clusters,
    entries: Entries,
    log: Log,
    signing: Signing,
    now: Now,
    since: Annotated[int, Query(ge=0, le=2**53)],
) -> Response:
    delta = build_delta(
        caller.cluster_id, since, clusters=clusters, entries=entries, log=log, now=now
    )
    signed = signed_delta(delta, signing, now)
    return Response(signed.payload, media_type=_JSON, headers=signed.headers())


@router.post(
    EVENTS_PATH.removeprefix(GATEWAY_PREFIX),
    response_model=Accepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Report a batch of access events (queued, never written synchronously)",
)
def post_access_events(
    *,
    batch: AccessEventBatch,
    caller: Caller,
    queue: Payloads,
    now: Now,
) -> Accepted:
    return Accepted(accepted=accept_access_events(batch, caller.cluster_id, queue, now))
