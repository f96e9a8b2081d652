"""Verify a Bearer token (hybrid modern authentication) against the cluster's issuers.

A ``BearerVerifier`` is built once per cluster settings (``ClusterSettings.bearer_issuers``:
issuer, audiences, the claim that names the user, and the issuer's public keys, which
travel in the signed policy) and verifies a JWT (RFC 7519) as the mail server's own
token validation would: the signature with the issuer's key named by ``kid`` (an
asymmetric algorithm of that key's type: never ``none``, never an HMAC, whose "key"
would be public here), ``iss`` equal to a configured issuer, ``aud`` one of its
audiences, ``exp`` in the future and ``nbf`` in the past with ``CLOCK_SKEW_S`` of slack.
The user is the configured claim (``upn`` or ``preferred_username``).

Pure: the time is a parameter (PyJWT's own time checks are turned off and done here),
the keys come from the settings, nothing touches the network. PyJWT does the signature
and claim checks (a well-kept library instead of our own JOSE code).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from seg_contract import BearerIssuer

# Tokens from an identity provider and a gateway's clock disagree by seconds; two minutes
# is what Microsoft's token validation allows by default (5) cut to a small margin.
CLOCK_SKEW_S = 120.0
MAX_TOKEN = 8192
MAX_USER = 256
_FAMILY = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}


class BearerError(ValueError):
    """The token is not one the cluster accepts; ``reason`` never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BearerClaims:
    """What a verified token says: its user (as the claim spells it) and until when."""

    user: str
    expires_at: float  # the token's exp (epoch seconds)


@dataclass(frozen=True, slots=True)
class _Key:
    kty: str
    alg: str
    key: Any  # a cryptography public key


@dataclass(frozen=True, slots=True)
class _Issuer:
    audiences: tuple[str, ...]
    user_claim: str
    by_kid: Mapping[str, _Key]
    keys: tuple[_Key, ...]


class BearerVerifier:
    """The verifier for one settings' issuers (immutable; build a new one on change)."""

    __slots__ = ("_issuers", "problems")

    def __init__(self, issuers: Sequence[BearerIssuer]) -> None:
        self._issuers: dict[str, _Issuer] = {}
        # Keys that could not be loaded (reported once by whoever builds the verifier).
        self.problems: list[str] = []
        for issuer in issuers:
            keys = []
            for jwk in issuer.keys:
                try:
                    loaded = jwt.PyJWK(jwk.model_dump(exclude_defaults=True))
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError) as exc:
                    self.problems.append(f"{issuer.issuer}: key {jwk.kid!r} unusable ({exc})")
                    continue
                keys.append((jwk.kid, _Key(jwk.kty, jwk.alg, loaded.key)))
            self._issuers[issuer.issuer] = _Issuer(
                audiences=issuer.audiences,
                user_claim=issuer.user_claim,
                by_kid={kid: key for kid, key in keys if kid},
                keys=tuple(key for _, key in keys),
            )

    @property
    def configured(self) -> bool:
        return bool(self._issuers)

    def verify(self, token: str, now: float) -> BearerClaims:
        """The user the token names and its expiry. Raises ``BearerError``."""
        if not self._issuers:
            raise BearerError("this cluster accepts no Bearer tokens (no issuer configured)")
        if len(token) > MAX_TOKEN:
            raise BearerError(f"Bearer token longer than {MAX_TOKEN} characters")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise BearerError("Bearer token is not a JWT") from None
        issuer_name = unverified.get("iss")
        issuer = self._issuers.get(issuer_name) if isinstance(issuer_name, str) else None
        if issuer is None:
            raise BearerError("Bearer token from an issuer this cluster does not accept")
        key, alg = _key_for(issuer, header)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer_name,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iss", "aud"],
                },
            )
        except jwt.InvalidAudienceError:
            raise BearerError("Bearer token is for another audience") from None
        except jwt.InvalidSignatureError:
            raise BearerError("Bearer token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise BearerError(f"Bearer token refused ({type(exc).__name__})") from None
        expires_at = _check_times(claims, now)
        user = claims.get(issuer.user_claim)
        if not isinstance(user, str) or not user.strip():
            raise BearerError(f"Bearer token has no {issuer.user_claim!r} claim")
        if len(user) > MAX_USER or not user.isprintable():
            raise BearerError(f"Bearer token's {issuer.user_claim!r} claim is not a user name")
        return BearerClaims(user, float(expires_at))


def _key_for(issuer: _Issuer, header: Mapping[str, Any]) -> tuple[_Key, str]:
    alg = header.get("alg")
    kid = header.get("kid")
    if isinstance(kid, str) and kid:
        key = issuer.by_kid.get(kid)
        if key is None:
            raise BearerError("Bearer token signed with a key the cluster does not hold")
    elif len(issuer.keys) == 1:
        key = issuer.keys[0]
    else:
        raise BearerError("Bearer token names no key (kid) and the issuer has several")
    if not isinstance(alg, str) or alg not in _FAMILY[key.kty] or (key.alg and alg != key.alg):
        raise BearerError("Bearer token's algorithm does not match the issuer's key")
    return key, alg


def _check_times(claims: Mapping[str, Any], now: float) -> float:
    """The token's exp, once exp and nbf hold at ``now`` (with the skew)."""
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise BearerError("Bearer token has no numeric exp")
    if now > exp + CLOCK_SKEW_S:
        raise BearerError("Bearer token has expired")
    if nbf is not None:
        if not isinstance(nbf, int | float) or isinstance(nbf, bool):
            raise BearerError("Bearer token has a non-numeric nbf")
        if now + CLOCK_SKEW_S < nbf:
            raise BearerError("Bearer token is not valid yet")
    return float(exp)
