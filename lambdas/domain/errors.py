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
