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

from datetime import datetime, timedelta

from lambdas.domain.gateway_nodes import NodeReport
from lambdas.domain.policy_log import DigestVerdict
from lambdas.domain.timefmt import format_instant
from lambdas.ports import GatewayNodeStore
from seg_contract import GatewayKeepalive


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
