"""Finding the cluster a use case acts on: the one place a missing cluster becomes
``NotFound`` (HTTP 404 through ``lambdas.api.errors``)."""

from __future__ import annotations

from lambdas.domain.errors import NotFound
from lambdas.domain.records import ClusterRecord
from lambdas.ports import ClusterStore


def require_cluster(clusters: ClusterStore, cluster_id: str) -> ClusterRecord:
    """The cluster, or ``NotFound``."""
    cluster = clusters.get_cluster(cluster_id)
    if cluster is None:
        raise NotFound(f"cluster {cluster_id} not found")
    return cluster
