"""Gateway nodes as the control plane last heard of them.

A node reports its state in every WebSocket keepalive (``seg_contract.GatewayKeepalive``)
and is *seen* whenever its access events arrive. The console's cluster panel shows both,
with whether the node has an open WebSocket connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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


def record_keepalive(
    nodes: GatewayNodeStore, cluster_id: str, keepalive: GatewayKeepalive, now: datetime
) -> NodeReport:
    """Store a keepalive's figures for the node (called by the WebSocket $default
    handler)."""
    report = NodeReport(
        cluster_id=cluster_id,
        node_id=keepalive.node_id,
        last_seen=format_instant(now),
        policy_version=keepalive.policy_version,
        policy_age_s=keepalive.policy_age_s,
        spool_depth=keepalive.spool_depth,
        gateway_version=keepalive.gateway_version,
        reported_at=format_instant(now),
    )
    nodes.record_keepalive(report)
    return report
