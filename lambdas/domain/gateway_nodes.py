"""A gateway node as the control plane last heard of it, as a value
(``lambdas.usecases.gateway_nodes`` records keepalives into it).
"""

from __future__ import annotations

from dataclasses import dataclass


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
