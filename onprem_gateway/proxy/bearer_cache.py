"""Bearer verification on the request path, with two caches.

A device sends the same access token on every request for up to an hour, and a
signature check costs tens of microseconds (RSA) to a hundred (ECDSA): verified tokens
are remembered until their ``exp`` (keyed by a digest of the token, so the cache holds
no token), and the ``BearerVerifier`` (the issuers' keys, loaded once) is rebuilt only
when the cluster settings change. Both caches are per process and bounded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from onprem_gateway.core.bearer import CLOCK_SKEW_S, BearerClaims, BearerError, BearerVerifier
from seg_contract import ClusterSettings

log = logging.getLogger(__name__)


class BearerTokens:
    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._settings: ClusterSettings | None = None
        self._verifier = BearerVerifier(())
        self._verified: dict[bytes, BearerClaims] = {}
        self._max = max_entries
        self._clock = clock

    def for_settings(self, settings: ClusterSettings) -> Callable[[str], str]:
        """The verify function for these settings (token -> user; raises BearerError)."""
        if settings is not self._settings:
            self._settings = settings
            verifier = BearerVerifier(settings.bearer_issuers)
            for problem in verifier.problems:
                log.error("Bearer issuer key refused: %s", problem)
            if self._verifier.configured or verifier.configured:
                self._verified.clear()
            self._verifier = verifier
        return self.verify

    def verify(self, token: str) -> str:
        now = self._clock()
        key = hashlib.blake2b(token.encode("ascii", "replace"), digest_size=20).digest()
        known = self._verified.get(key)
        if known is not None:
            if now <= known.expires_at + CLOCK_SKEW_S:
                return known.user
            del self._verified[key]
            raise BearerError("Bearer token has expired")
        claims = self._verifier.verify(token, now)
        if len(self._verified) >= self._max:
            del self._verified[next(iter(self._verified))]
        self._verified[key] = claims
        return claims.user
