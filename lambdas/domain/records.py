"""Stored records of the control plane's write side that are not contract models:
clusters, WebSocket connections and gateway node state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lambdas.domain.policy_bootstrap import BootstrapMark
from lambdas.domain.policy_log import Watermark
from seg_contract import ClusterSettings


@dataclass(frozen=True)
class ClusterRecord:
    cluster_id: str
    name: str
    created_at: datetime
    policy_version: int  # the counter: the last version handed out
    settings: ClusterSettings
    settings_version: int  # the version that wrote ``settings`` (0: defaults, never set)
    # The committed version W, the policy digest at W and recent digests: the only
    # version ever stated to a gateway (``lambdas.usecases.policy_versions``).
    watermark: Watermark
    public_key: str = ""
    # When every existing device was queued for evaluation into this cluster (None: not
    # yet; the scheduled sweep seeds such clusters).
    seeded_at: datetime | None = None
    # An item from before committed versions (none stored yet): ``watermark`` is a
    # placeholder at version 0 until ``usecases.policy_bootstrap`` stores the first one;
    # ``bootstrap`` says when that began.
    legacy: bool = False
    bootstrap: BootstrapMark | None = None

    @property
    def committed_version(self) -> int:
        return self.watermark.version


@dataclass(frozen=True)
class Connection:
    """An open WebSocket connection of a gateway node."""

    connection_id: str
    cluster_id: str
    node_id: str
    key_id: str
    connected_at: datetime


@dataclass(frozen=True)
class NodeState:
    """A gateway node as last seen (the cluster panel)."""

    cluster_id: str
    node_id: str
    connected: bool
    connection_id: str
    policy_version: int
    policy_age_s: float
    spool_depth: int
    gateway_version: str
    last_seen: datetime | None
