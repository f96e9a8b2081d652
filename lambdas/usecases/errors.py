"""Typed errors raised by use cases and adapters.

Each class says what went wrong in domain terms; ``lambdas.api.errors`` is the one place
that turns them into HTTP statuses. The message is safe to show to the caller: it never
carries a secret, a password or a credential.
"""

from __future__ import annotations

from pydantic import ValidationError


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


class StorageError(UseCaseError):
    """A backend failed in a way the caller cannot fix (throttling, outage)."""


class SigningUnavailable(StorageError):
    """Policy cannot be signed now (no signing key configured, or KMS failed): nothing
    unsigned is ever sent instead."""


def validation_problems(exc: ValidationError) -> str:
    """pydantic's errors on one line, ``where: what; ...``, for an ``InvalidInput``
    detail: locations and messages only, leaving out the input values pydantic keeps."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
