"""Pure parts of the proxy: settings validation, local answers, metrics, events, the
credential-substitution cache."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import resource
import threading
import time
from collections.abc import Sequence

import pytest

from onprem_gateway.core.eas_request import parse
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy import ProxySettings, Timeouts, Upstream
from onprem_gateway.proxy.events import build_event, next_event_id
from onprem_gateway.proxy.metrics import UPSTREAM_BUCKETS, ProxyMetrics, merge
from onprem_gateway.proxy.responses import local_response
from onprem_gateway.proxy.settings import SettingsError
from onprem_gateway.proxy.state import connection_limit
from onprem_gateway.proxy.substitution import REJECT, CredentialSubstituter, Substitution
from seg_contract import Access, ClusterSettings, PolicySnapshot, UserCredential


def settings(**kw: object) -> ProxySettings:
    base: dict[str, object] = {
        "upstream": Upstream(url="https://exchange.corp"),
        "public_url": "https://seg.example.com",
    }
    base.update(kw)
    return ProxySettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"upstream": Upstream(url="ftp://x")}, "must be http(s)"),
        ({"upstream": Upstream(url="http://exchange")}, "allow_plain_http"),
        ({"upstream": Upstream(url="https://exchange/owa")}, "path"),
        ({"public_url": "seg.example.com"}, "public url"),
        ({"tls_cert": "/x.crt"}, "go together"),
        ({"timeouts": Timeouts(request_idle_s=0)}, "> 0"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_reason(kw: dict[str, object], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        settings(**kw)


def test_upstream_url_parts() -> None:
    up = Upstream(url="http://mail:8080", allow_plain_http=True)
    assert (up.scheme, up.host, up.port, up.authority) == ("http", "mail", 8080, "mail:8080")
    assert Upstream(url="https://mail").port == 443
    settings(upstream=up)  # accepted


def test_local_response_is_complete_http() -> None:
    out = local_response(
        403, b"no\n", headers=((b"X-A", b"1"),), keep_alive=False, date=b"Thu, 01 Jan 1970"
    )
    assert out == (
        b"HTTP/1.1 403 Forbidden\r\nDate: Thu, 01 Jan 1970\r\nX-A: 1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nno\n"
    )
    assert local_response(451, b"").startswith(b"HTTP/1.1 451 Redirect\r\n")


def test_metrics_snapshot_and_merge() -> None:
    a, b = ProxyMetrics(), ProxyMetrics()
    a.count_request("Sync", "allow", True)
    b.count_request("Sync", "allow", True)
    b.count_request("Ping", "block", False)
    a.observe_upstream("Sync", 0.003)
    b.observe_upstream("Sync", 5000.0)
    a.held, b.held = 2, 3
    total = merge([a.snapshot(), b.snapshot()])
    assert total["requests"] == {"Sync|allow|true": 2, "Ping|block|false": 1}
    hist = total["upstream_latency"]["Sync"]
    assert hist["count"] == 2 and hist["sum"] == pytest.approx(5000.003)
    assert hist["buckets"][UPSTREAM_BUCKETS.index(0.005)] == 1
    assert hist["buckets"][-1] == 1  # +Inf
    assert total["held"] == 5


def test_event_ids_are_unique_and_events_fit_the_contract() -> None:
    ids = {next_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    facts = parse(
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=Sync&User=bob&DeviceId=D&DeviceType=Android",
        {"user-agent": "A" * 512},
    )
    event = build_event(
        "n" * 300,
        facts=facts,
        decision=Access.ALLOW,
        reason="r" * 600,
        rule="x" * 200,
        enforced=True,
        http_status=200,
    )
    assert len(event.node_id) == 256 and len(event.reason) == 512 and len(event.rule) == 128
    assert event.user == "bob" and event.command == "Sync"


# --- credential substitution cache ------------------------------------------------------


def _policy(cred: UserCredential) -> PolicyIndex:
    snap = PolicySnapshot(
        cluster_id="c",
        version=1,
        generated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        settings=ClusterSettings(),
        credentials=(cred,),
    )
    return PolicyIndex.from_snapshot(snap, confirmed_at=time.time())


def _cred(version: int = 1, enabled: bool = True) -> UserCredential:
    return UserCredential(
        user="alice",
        enabled=enabled,
        pw1_hashes=("scrypt$fake",),
        sealed_pw2="sealed",
        version=version,
        updated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


class FakeCrypto:
    def __init__(self) -> None:
        self.verify_calls = 0
        self.threads: set[str] = set()

    def verify(self, password: str, hashes: Sequence[str]) -> bool:
        self.verify_calls += 1
        self.threads.add(threading.current_thread().name)
        return password == "right"

    def unseal(self, sealed: str, key: str) -> str:
        assert (sealed, key) == ("sealed", "key")
        return "pw2"


def _facts(password: str | None) -> tuple[object, str | None]:
    auth = None
    if password is not None:
        auth = "Basic " + base64.b64encode(f"CORP\\alice:{password}".encode()).decode()
    facts = parse(
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=D&DeviceType=T&User=alice",
        {"authorization": auth} if auth else {},
    )
    return facts, auth


async def test_verification_runs_off_loop_once_then_comes_from_the_cache() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    policy = _policy(_cred())
    facts, auth = _facts("right")
    first = sub.evaluate(policy, facts, auth)  # type: ignore[arg-type]
    assert isinstance(first, asyncio.Future)
    expected = b"Basic " + base64.b64encode(b"CORP\\alice:pw2")
    assert await first == expected
    assert sub.evaluate(policy, facts, auth) == expected  # type: ignore[arg-type]
    assert crypto.verify_calls == 1
    assert threading.main_thread().name not in crypto.threads
    # A new credential version invalidates what was verified.
    again = sub.evaluate(_policy(_cred(version=2)), facts, auth)  # type: ignore[arg-type]
    assert isinstance(again, asyncio.Future) and await again == expected
    assert crypto.verify_calls == 2


async def test_wrong_or_missing_password_is_rejected_and_disabled_user_untouched() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal)
    policy = _policy(_cred())
    facts, auth = _facts("wrong")
    pending = sub.evaluate(policy, facts, auth)  # type: ignore[arg-type]
    assert isinstance(pending, asyncio.Future) and await pending is REJECT
    assert sub.evaluate(policy, facts, auth) is REJECT  # type: ignore[arg-type]
    facts, auth = _facts(None)
    assert sub.evaluate(policy, facts, auth) is REJECT  # type: ignore[arg-type]
    assert sub.evaluate(_policy(_cred(enabled=False)), facts, auth) is None  # type: ignore[arg-type]
    no_key = CredentialSubstituter(None, verify=crypto.verify, unseal=crypto.unseal)
    facts, auth = _facts("right")
    pending = no_key.evaluate(policy, facts, auth)  # type: ignore[arg-type]
    assert isinstance(pending, asyncio.Future) and await pending is Substitution.UNAVAILABLE


async def test_cache_is_bounded() -> None:
    crypto = FakeCrypto()
    sub = CredentialSubstituter("key", verify=crypto.verify, unseal=crypto.unseal, max_entries=3)
    policy = _policy(_cred())
    for i in range(10):
        facts, auth = _facts(f"guess{i}")
        pending = sub.evaluate(policy, facts, auth)  # type: ignore[arg-type]
        assert isinstance(pending, asyncio.Future)
        await pending
    assert len(sub._verified) == 3


def test_connection_limit_follows_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (20_000, 20_000))
    assert connection_limit(9_500) == 9_500
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    assert connection_limit(9_500) == 480
