"""Gateway cluster credentials: their format, their hash, and authentication.

A credential is ``segc_<cluster_id>_<key_id>_<secret>``. Gateways treat it as opaque;
the control plane reads the cluster and key from it so that one DynamoDB read finds the
stored hash (no scan, no index on a secret-derived value).

Why sha256 and not scrypt: the secret is 256 bits from ``secrets`` (not a human
password), so a slow hash adds no protection against guessing (2^256 candidates) while
it would cost ~50 ms of CPU on every gateway call and WebSocket ``$connect``. sha256 of a
high-entropy secret is what GitHub and AWS do for API tokens. The hash is compared with
``hmac.compare_digest`` (constant time).

``authenticate_gateway`` is called by the API's gateway routes and by the WebSocket
``$connect`` handler; both mark its refusals (``CREDENTIAL_REJECTIONS``) with
``seg_contract.http.CREDENTIAL_REJECTED_HEADER``, so a node can tell our 401/403 from a
proxy's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from lambdas.domain.errors import RevokedCredential, Unauthenticated, UnknownCredential
from lambdas.ports import ClusterCredentialStore

PREFIX = "segc"
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SECRET_BYTES = 32  # 256 bits
MAX_CREDENTIAL_LENGTH = 256


@dataclass(frozen=True)
class GatewayPrincipal:
    """Who a gateway call is from: its cluster and which of the cluster's keys it used."""

    cluster_id: str
    key_id: str


@dataclass(frozen=True)
class IssuedCredential:
    """A fresh credential: ``token`` is shown to the admin once and never stored."""

    cluster_id: str
    key_id: str
    token: str = field(repr=False)  # never in a log line or a traceback
    secret_sha256: str


def is_valid_id(value: str) -> bool:
    """Cluster and key ids: lower-case letters, digits and '-' (never '_', the separator)."""
    return bool(_ID.match(value))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue_credential(cluster_id: str) -> IssuedCredential:
    if not is_valid_id(cluster_id):
        raise ValueError(f"invalid cluster id {cluster_id!r}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    token = f"{PREFIX}_{cluster_id}_{key_id}_{secret}"
    return IssuedCredential(cluster_id, key_id, token, hash_secret(secret))


def parse_credential(token: str) -> tuple[str, str, str]:
    """Split a credential into (cluster_id, key_id, secret); UnknownCredential if it is
    not one of ours."""
    if not token or len(token) > MAX_CREDENTIAL_LENGTH:
        raise UnknownCredential("malformed gateway credential")
    parts = token.split("_", 3)
    if len(parts) != 4 or parts[0] != PREFIX:
        raise UnknownCredential("malformed gateway credential")
    _, cluster_id, key_id, secret = parts
    if not (is_valid_id(cluster_id) and is_valid_id(key_id) and secret):
        raise UnknownCredential("malformed gateway credential")
    return cluster_id, key_id, secret


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value (any caller)."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer <credential>")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <credential>'")
    return token.strip()


def gateway_token(authorization: str | None) -> str:
    """A gateway's credential from its ``Authorization`` header; a missing or malformed
    one is refused as ``UnknownCredential`` like any other rejected credential."""
    try:
        return bearer_token(authorization)
    except Unauthenticated as exc:
        raise UnknownCredential(exc.detail) from None


# A gateway credential refused by us (HTTP 401/403 with CREDENTIAL_REJECTED_HEADER).
CREDENTIAL_REJECTIONS: tuple[type[Exception], ...] = (UnknownCredential, RevokedCredential)


def authenticate_gateway(token: str, credentials: ClusterCredentialStore) -> GatewayPrincipal:
    """Return the principal of a valid, unrevoked credential.

    Raises ``UnknownCredential`` (malformed, unknown cluster or key, wrong secret) or
    ``RevokedCredential`` (right secret, revoked key). The secret's hash is compared in
    constant time; a wrong secret for a revoked key is ``UnknownCredential`` so that
    revocation status is only revealed to someone who holds the secret.
    """
    cluster_id, key_id, secret = parse_credential(token)
    stored = credentials.get_credential(cluster_id, key_id)
    if stored is None:
        # Compare anyway so an unknown key costs the same as a wrong secret.
        hmac.compare_digest(hash_secret(secret), "0" * 64)
        raise UnknownCredential("unknown gateway credential")
    if not hmac.compare_digest(hash_secret(secret), stored.secret_sha256):
        raise UnknownCredential("unknown gateway credential")
    if stored.revoked:
        raise RevokedCredential("gateway credential revoked")
    return GatewayPrincipal(cluster_id=cluster_id, key_id=key_id)
