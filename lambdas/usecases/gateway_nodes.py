"""Gateway nodes as the control plane last heard of them.

A node reports its state in every WebSocket keepalive (``seg_contract.GatewayKeepalive``)
and is *seen* whenever its access events arrive. The console's cluster panel shows both,
with whether the node has an open WebSocket connection, and the verdict of the last
check of the node's policy digest: in sync (and when it last was), diverged (the node
was told to replace its policy), or unchecked (it reported no digest for a version the
control plane keeps one of); and how many mismatches the node has had. A node that
refused signed policy input (forged, altered or replayed on the way, or signed by a key
it does not trust) says so in its keepalives: how many since it started, the reason of
the last one and when; the console shows that as an alert on the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.policy_log import DigestVerdict
from lambdas.domain.timefmt import format_instant
from lambdas.ports import GatewayNodeStore
from seg_contract import GatewayKeepalive


@dataclass(frozen=True)
class NodeReport:
    cluster_id: str
    node_id: str
    last_seen: str  # format_instant(); the newest keepalive or access event
    policy_version: int | None = None
    policy_age_s: float | None = None
    spool_depth: int | None = None
    gateway_version: str = ""
    reported_at: str = ""  # format_instant() of the keepalive these figures came from
    digest_check: str = ""  # DigestVerdict of the last keepalive ("" before the first)
    last_verified_at: str = ""  # format_instant() of the last in_sync verdict
    digest_mismatches: int = 0  # diverged verdicts, ever
    policy_rejections: int = 0  # signed input the node refused, since it started
    last_rejection: str = ""  # the reason of the last refusal (RejectReason)
    last_rejection_at: str = ""  # format_instant() of the last refusal


def record_keepalive(
    nodes: GatewayNodeStore,
    cluster_id: str,
    keepalive: GatewayKeepalive,
    now: datetime,
    verdict: DigestVerdict = DigestVerdict.UNCHECKED,
) -> NodeReport:
    """Store a keepalive's figures and its digest verdict for the node (called by the
    WebSocket $default handler)."""
    report = NodeReport(
        cluster_id=cluster_id,
        node_id=keepalive.node_id,
        last_seen=format_instant(now),
        policy_version=keepalive.policy_version,
        policy_age_s=keepalive.policy_age_s,
        spool_depth=keepalive.spool_depth,
        gateway_version=keepalive.gateway_version,
        reported_at=format_instant(now),
        digest_check=verdict.value,
        last_verified_at=format_instant(now) if verdict is DigestVerdict.IN_SYNC else "",
        digest_mismatches=1 if verdict is DigestVerdict.DIVERGED else 0,
        policy_rejections=keepalive.policy_rejections,
        last_rejection=keepalive.last_rejection,
        last_rejection_at=(
            format_instant(now - timedelta(seconds=keepalive.last_rejection_age_s))
            if keepalive.policy_rejections and keepalive.last_rejection_age_s is not None
            else ""
        ),
    )
    nodes.record_keepalive(report)
    return report
