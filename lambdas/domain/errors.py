"""Errors the write side's ports raise in domain terms (adapters translate botocore's
``ClientError`` into these; ``lambdas.usecases.errors`` holds the HTTP-facing ones)."""

from __future__ import annotations


class ConnectionGone(Exception):
    """The WebSocket connection no longer exists (API Gateway's GoneException)."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is gone")
        self.connection_id = connection_id


class PushFailed(Exception):
    """Posting to a connection failed for another reason (throttled, too large)."""


class JwksUnavailable(Exception):
    """A token issuer's key set could not be fetched (network, TLS, HTTP, not JSON)."""


class VersionFenced(Exception):
    """The policy version was settled as abandoned before its commit landed (its writer
    took too long): nothing was written; redo the work under a new version."""

    def __init__(self, cluster_id: str, version: int) -> None:
        super().__init__(f"policy version {version} of cluster {cluster_id} was abandoned")
        self.version = version


class CommitConflict(Exception):
    """A compare-and-swap of the commit failed (an entry or the settings moved since they
    were read, or a concurrent transaction touched them): nothing was written; read
    again and retry under the same version."""
