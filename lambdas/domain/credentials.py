"""Gateway cluster credentials as stored: the hash of each key's secret, never the
secret (``lambdas.usecases.gateway_auth`` issues and checks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class StoredCredential:
    """One key of a cluster as stored: only the hash of its secret."""

    cluster_id: str
    key_id: str
    secret_sha256: str  # hex
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
