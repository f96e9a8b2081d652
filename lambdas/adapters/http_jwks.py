"""Fetch a token issuer's JWK Set over HTTPS (``lambdas.usecases.token_issuers``).

PyJWT's ``PyJWKClient`` does the request (urllib, TLS verified with the injected context
or the system's, a timeout, no cache: the use case decides when to fetch); every failure
becomes ``JwksUnavailable`` with a reason that names no secret."""

from __future__ import annotations

import ssl
from typing import Any

import jwt

from lambdas.domain.errors import JwksUnavailable

MAX_TIMEOUT_S = 10.0


class HttpJwks:
    def __init__(self, ssl_context: ssl.SSLContext | None = None, timeout_s: float = 5.0) -> None:
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._timeout_s = min(timeout_s, MAX_TIMEOUT_S)

    def fetch(self, uri: str) -> dict[str, Any]:
        client = jwt.PyJWKClient(
            uri,
            cache_keys=False,
            cache_jwk_set=False,
            timeout=self._timeout_s,
            ssl_context=self._ssl_context,
        )
        try:
            data = client.fetch_data()
        except jwt.PyJWKClientError as exc:
            raise JwksUnavailable(f"cannot fetch {uri[:200]}: {str(exc)[:200]}") from None
        except ValueError:  # the body is not JSON
            raise JwksUnavailable(f"{uri[:200]} did not answer JSON") from None
        if not isinstance(data, dict):
            raise JwksUnavailable(f"{uri[:200]} did not answer a JSON object")
        return data
