"""Credential substitution on the request path (the seed's PW1 -> PW2).

For a user with an enabled ``UserCredential`` in the policy, the device's Basic password
must verify against one of the PW1 hashes issued for the request's DeviceId (or a legacy
unbound one, ``core.credentials.candidate_hashes``); the request then goes upstream with
``Basic user:PW2``, PW2 being opened from its sealed form with the cluster's private key.

scrypt is deliberately slow, so a verification runs in a worker thread and its result
is cached: the key is a keyed BLAKE2b of (user, credential version, device, presented
password) with a per-process random key, so the cache never holds a password or an
offline-guessable hash of one, and a new credential version invalidates it. The cache
is bounded (oldest entries evicted first). Opened PW2s are cached per (user, version).
Wrong passwords are counted per user and per device (``rate_limit.FailureLimiter``):
past the limit, attempts are refused without hashing (``LIMITED``); a password already
known to be right still passes (nothing to hash), so a guesser cannot lock out a device
that is already working. A device with no password for it is refused without hashing.
Neither password is ever logged or put in an exception message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Sequence

from onprem_gateway.core.authentication import Presented, Scheme
from onprem_gateway.core.credentials import (
    Substitution,
    basic_authorization,
    candidate_hashes,
    substitution_enabled,
)
from onprem_gateway.core.facts import RequestFacts
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy.rate_limit import FailureLimiter
from seg_contract import UserCredential

log = logging.getLogger(__name__)

VerifyFn = Callable[[str, Sequence[str]], bool]  # (presented password, stored hashes)
UnsealFn = Callable[[str, str], str]


REJECT = Substitution.REJECT
Outcome = bytes | Substitution | None


class CredentialSubstituter:
    def __init__(
        self,
        private_key: str | None,
        *,
        verify: VerifyFn,
        unseal: UnsealFn,
        max_entries: int = 10_000,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self._private_key = private_key
        self.limiter = limiter if limiter is not None else FailureLimiter(5, 300.0)
        self._verify = verify
        self._unseal = unseal
        self._max = max_entries
        self._mac_key = os.urandom(32)
        self._verified: dict[bytes, bool] = {}
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        self._pw2: dict[tuple[str, int], str] = {}

    # Each early return is one refusal that must happen before any hashing.
    def evaluate(  # noqa: PLR0911
        self, policy: PolicyIndex, facts: RequestFacts, presented: Presented | None, now: float
    ) -> Outcome | asyncio.Future[Outcome]:
        """None: no substitution for this user (forward unchanged). bytes: the new
        Authorization value. ``REJECT`` / ``LIMITED`` / ``UNAVAILABLE``. A future of one of
        those while the password is being verified (a cache miss). ``now`` is the clock of
        the failure windows."""
        if not facts.user:
            return None
        cred = policy.credential(facts.user)
        if cred is None or not substitution_enabled(cred):
            return None
        if presented is None or presented.scheme is not Scheme.BASIC:
            return REJECT
        try:
            password = presented.password.decode("utf-8")
        except UnicodeDecodeError:
            return REJECT
        raw_user = presented.user
        device = facts.device_id
        limit_keys = (f"u\x1f{facts.user}", f"d\x1f{device}") if device else (f"u\x1f{facts.user}",)
        key = hashlib.blake2b(
            f"{facts.user}\x1f{cred.version}\x1f{device}\x1f{password}".encode(),
            key=self._mac_key,
            digest_size=20,
        ).digest()
        known = self._verified.get(key)
        if known:
            return self._authorization(raw_user, cred)
        if self.limiter.limited(limit_keys, now):
            return Substitution.LIMITED
        hashes = candidate_hashes(cred, device)
        if known is False or not hashes:
            self.limiter.failed(limit_keys, now)
            return REJECT
        loop = asyncio.get_running_loop()
        verifying = self._inflight.get(key)
        if verifying is None:
            verifying = loop.run_in_executor(None, self._verify, password, hashes)
            self._inflight[key] = verifying
            verifying.add_done_callback(lambda fut: self._remember(key, fut))
        result: asyncio.Future[Outcome] = loop.create_future()

        def done(fut: asyncio.Future[bool]) -> None:
            if result.done():
                return
            ok = not fut.cancelled() and fut.exception() is None and fut.result()
            if not ok:
                self.limiter.failed(limit_keys, now)  # counted at the attempt's time
            result.set_result(self._authorization(raw_user, cred) if ok else REJECT)

        verifying.add_done_callback(done)
        return result

    def _remember(self, key: bytes, fut: asyncio.Future[bool]) -> None:
        self._inflight.pop(key, None)
        if fut.cancelled() or fut.exception() is not None:
            if fut.exception() is not None:
                log.error("device password verification failed: %s", type(fut.exception()))
            return
        if len(self._verified) >= self._max:
            del self._verified[next(iter(self._verified))]
        self._verified[key] = bool(fut.result())

    def _authorization(self, raw_user: str, cred: UserCredential) -> bytes | Substitution:
        pw2 = self._pw2.get((cred.user, cred.version))
        if pw2 is None:
            if self._private_key is None or not cred.sealed_pw2:
                log.error("credential substitution for a user but no cluster key or PW2 here")
                return Substitution.UNAVAILABLE
            try:
                pw2 = self._unseal(cred.sealed_pw2, self._private_key)
            except Exception as exc:  # wrong key, corrupt box: say which kind, not the data
                log.error("cannot open the sealed upstream password (%s)", type(exc).__name__)
                return Substitution.UNAVAILABLE
            if len(self._pw2) >= self._max:
                del self._pw2[next(iter(self._pw2))]
            self._pw2[(cred.user, cred.version)] = pw2
        return basic_authorization(raw_user, pw2).encode("utf-8")
