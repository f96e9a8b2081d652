"""A throwaway token issuer for Bearer tests: real keys (cryptography), real JWTs (PyJWT),
its public keys as a JWKS and as the contract's ``BearerIssuer``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from seg_contract import BearerIssuer, Jwk

ISSUER = "https://login.example.test/tenant-1/v2.0"
AUDIENCE = "https://mail.example.test/"


@dataclass
class Issuer:
    issuer: str = ISSUER
    kid: str = "key-1"
    kind: str = "RSA"  # or "EC"
    _key: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._key is None:
            self._key = (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                if self.kind == "RSA"
                else ec.generate_private_key(ec.SECP256R1())
            )

    @property
    def alg(self) -> str:
        return "RS256" if self.kind == "RSA" else "ES256"

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.kind == "RSA" else ECAlgorithm
        out: dict[str, Any] = codec.to_jwk(self._key.public_key(), as_dict=True)
        out.pop("key_ops", None)
        out.update(kid=self.kid, use="sig", alg=self.alg)
        return out

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    def contract(self, **overrides: Any) -> BearerIssuer:
        values: dict[str, Any] = {
            "issuer": self.issuer,
            "audiences": (AUDIENCE,),
            "user_claim": "upn",
            "keys": (Jwk(**self.jwk()),),
        }
        values.update(overrides)
        return BearerIssuer(**values)

    def token(
        self,
        upn: str = "alice@corp.example",
        *,
        now: float | None = None,
        lifetime_s: float = 3600,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        t = time.time() if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "iat": int(t),
            "nbf": int(t) - 5,
            "exp": int(t + lifetime_s),
            "upn": upn,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self._key, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )
