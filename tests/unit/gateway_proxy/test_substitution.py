"""Credential substitution on the request path (``proxy/substitution.py``): the
verification cache, device binding of PW1s and the failure limit that refuses guesses
before any hashing."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from onprem_gateway.core.authentication import Presented, read_authorization
from onprem_gateway.core.eas_request import parse
from onprem_gateway.core.facts import RequestFacts
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy.rate_limit import FailureLimiter
from onprem_gateway.proxy.substitution import REJECT, CredentialSubstituter, Substitution
from seg_contract import ClusterSettings, DevicePassword, PolicySnapshot, UserCredential


def _policy(cred: UserCredential) -> PolicyIndex:
    snap = PolicySnapshot(
        cluster_id="c",
        version=1,
        generated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        settings=ClusterSettings(),
        credentials=(cred,),
    )
    return PolicyIndex.from_snapshot(snap, confirmed_at=time.time())


def _cred(
    version: int = 1,
    enabled: bool = True,
    *,
    legacy: tuple[str, ...] = ("scrypt$legacy",),
    bound: tuple[DevicePassword, ...] = (),
) -> UserCredential:
    return UserCredential(
        user="alice",
        enabled=enabled,
        pw1_hashes=legacy,
        device_passwords=bound,
        sealed_pw2="sealed",
        version=version,
        updated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


class FakeCrypto:
    """Hashes are "scrypt$<password>": ``verify`` says whether one of them is it."""

    def __init__(self) -> None:
        self.verify_calls = 0
        self.hashes_seen: list[tuple[str, ...]] = []
        self.threads: set[str] = set()

    def verify(self, password: str, hashes: Sequence[str]) -> bool:
        self.verify_calls += 1
        self.hashes_seen.append(tuple(hashes))
        self.threads.add(threading.current_thread().name)
        return f"scrypt${password}" in hashes

    def unseal(self, sealed: str, key: str) -> str:
        assert (sealed, key) == ("sealed", "key")
        return "pw2"


def _request(password: str | None, device: str = "D") -> tuple[RequestFacts, Presented | None]:
    auth = None
    if password is not None:
        auth = "Basic " + base64.b64encode(f"CORP\\alice:{password}".encode()).decode()
    facts = parse(
        "POST", f"/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId={device}&DeviceType=T", {}
    )
    # What core.admission does: the user is the authenticated one.
    facts = replace(facts, user="alice", raw_user="CORP\\alice")
    return facts, read_authorization(auth)


async def test_verification_runs_off_loop_once_then_comes_from_the_cache() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    policy = _policy(_cred(legacy=("scrypt$right",)))
    facts, presented = _request("right")
    first = sub.evaluate(policy, facts, presented, 0.0)
    assert isinstance(first, asyncio.Future)
    expected = b"Basic " + base64.b64encode(b"CORP\\alice:pw2")
    assert await first == expected
    assert sub.evaluate(policy, facts, presented, 0.0) == expected
    assert crypto.verify_calls == 1
    assert threading.main_thread().name not in crypto.threads
    # A new credential version invalidates what was verified.
    again = sub.evaluate(_policy(_cred(version=2, legacy=("scrypt$right",))), facts, presented, 0)
    assert isinstance(again, asyncio.Future) and await again == expected
    assert crypto.verify_calls == 2


async def test_wrong_or_missing_password_is_rejected_and_disabled_user_untouched() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    policy = _policy(_cred(legacy=("scrypt$right",)))
    facts, presented = _request("wrong")
    pending = sub.evaluate(policy, facts, presented, 0.0)
    assert isinstance(pending, asyncio.Future) and await pending is REJECT
    assert sub.evaluate(policy, facts, presented, 0.0) is REJECT
    facts, presented = _request(None)
    assert sub.evaluate(policy, facts, presented, 0.0) is REJECT
    assert sub.evaluate(_policy(_cred(enabled=False)), facts, presented, 0.0) is None
    no_key = CredentialSubstituter(None, verify=crypto.verify, unseal=crypto.unseal)
    facts, presented = _request("right")
    pending = no_key.evaluate(policy, facts, presented, 0.0)
    assert isinstance(pending, asyncio.Future) and await pending is Substitution.UNAVAILABLE


async def test_ntlm_or_bearer_for_a_substituted_user_is_rejected() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    facts, _ = _request(None)
    bearer = read_authorization("Bearer abc.def.ghi")
    assert sub.evaluate(_policy(_cred()), facts, bearer, 0.0) is REJECT
    assert crypto.verify_calls == 0


async def test_cache_is_bounded() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter(
        "key",
        verify=crypto.verify,
        unseal=crypto.unseal,
        max_entries=3,
        limiter=FailureLimiter(100, 60.0),
    )
    policy = _policy(_cred())
    for i in range(10):
        facts, presented = _request(f"guess{i}")
        pending = sub.evaluate(policy, facts, presented, 0.0)
        assert isinstance(pending, asyncio.Future)
        await pending
    assert len(sub._verified) == 3


async def test_a_bound_password_opens_only_its_own_device() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    bound = (DevicePassword(device_id="d", pw1_hash="scrypt$for-d"),)
    policy = _policy(_cred(legacy=(), bound=bound))
    facts, presented = _request("for-d", device="D")
    ok = sub.evaluate(policy, facts, presented, 0.0)
    assert isinstance(ok, asyncio.Future) and isinstance(await ok, bytes)
    assert crypto.hashes_seen == [("scrypt$for-d",)]
    # The same password from another DeviceId: no password for that device, refused
    # without hashing anything.
    facts, presented = _request("for-d", device="OTHER")
    assert sub.evaluate(policy, facts, presented, 0.0) is REJECT
    assert crypto.verify_calls == 1


async def test_legacy_unbound_passwords_still_open_any_device() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    bound = (DevicePassword(device_id="d", pw1_hash="scrypt$for-d"),)
    policy = _policy(_cred(legacy=("scrypt$old",), bound=bound))
    facts, presented = _request("old", device="ELSEWHERE")
    ok = sub.evaluate(policy, facts, presented, 0.0)
    assert isinstance(ok, asyncio.Future) and isinstance(await ok, bytes)
    assert crypto.hashes_seen == [("scrypt$old",)]


async def test_failures_are_limited_per_user_and_device_before_any_hashing() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter(
        "key", verify=crypto.verify, unseal=crypto.unseal, limiter=FailureLimiter(3, 60.0)
    )
    policy = _policy(_cred(legacy=("scrypt$right",)))
    # A good password verified before the guessing starts.
    facts, good = _request("right", device="MINE")
    first = sub.evaluate(policy, facts, good, 0.0)
    assert isinstance(first, asyncio.Future) and isinstance(await first, bytes)
    for i in range(3):
        facts, presented = _request(f"guess{i}", device=f"D{i}")
        pending = sub.evaluate(policy, facts, presented, 1.0)
        assert isinstance(pending, asyncio.Future) and await pending is REJECT
    calls = crypto.verify_calls
    # The user's budget is spent: another guess, from any device, costs no hashing.
    facts, presented = _request("guess-more", device="D9")
    assert sub.evaluate(policy, facts, presented, 2.0) is Substitution.LIMITED
    assert crypto.verify_calls == calls
    # The password already known to be right still works (nothing to hash).
    facts, good = _request("right", device="MINE")
    assert isinstance(sub.evaluate(policy, facts, good, 2.0), bytes)
    # After the window, guesses are verified (and refused) again.
    facts, presented = _request("guess-later", device="D9")
    later = sub.evaluate(policy, facts, presented, 62.0)
    assert isinstance(later, asyncio.Future) and await later is REJECT
    assert crypto.verify_calls == calls + 1
