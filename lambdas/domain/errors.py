"""The control plane's typed errors, in domain terms: the one error module.

Use cases and adapters raise them (adapters translate botocore's ``ClientError`` into
them); ``lambdas.api.errors`` is the one place that turns the ``UseCaseError`` family into
HTTP statuses. A message is safe to show to the caller: it never carries a secret, a
password or a credential.
"""

from __future__ import annotations

from pydantic import ValidationError

# --- What a request may be answered with (``lambdas.api.errors`` maps each to a status) ---


class UseCaseError(Exception):
    """Base of every typed error a use case may raise."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(UseCaseError):
    """The named thing (cluster, device, user entry) does not exist."""


class Conflict(UseCaseError):
    """The request contradicts the current state (e.g. no public key to seal with)."""


class InvalidInput(UseCaseError):
    """The request is well-formed JSON but its values cannot be used."""


class Unauthenticated(UseCaseError):
    """No credential, or one that is malformed or unknown."""


class Forbidden(UseCaseError):
    """A known credential that may not do this (revoked, or another cluster's)."""


class Gone(UseCaseError):
    """What was asked for existed once and is no longer available."""


class UnknownCredential(Unauthenticated):
    """A gateway credential that is malformed, unknown, or not matching any stored key
    (HTTP 401)."""


class RevokedCredential(Forbidden):
    """A gateway credential that was valid and has been revoked (HTTP 403)."""


class DeltaTooOld(Gone):
    """The policy delta asked for cannot be built exactly: fetch the full snapshot
    (HTTP 410)."""

    def __init__(self, detail: str, since: int) -> None:
        super().__init__(detail)
        self.since = since


class StorageError(UseCaseError):
    """A backend failed in a way the caller cannot fix (throttling, outage)."""


class SigningUnavailable(StorageError):
    """Policy cannot be signed now (no signing key configured, or KMS failed): nothing
    unsigned is ever sent instead."""


def validation_problems(exc: ValidationError) -> str:
    """pydantic's errors on one line, ``where: what; ...``, for an ``InvalidInput``
    detail: locations and messages only, leaving out the input values pydantic keeps."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


# --- What the write side's ports raise (handled by the use cases, never sent as is) ---


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
