"""Pure parts of the proxy: settings validation, local answers, metrics, events
(credential substitution: ``test_substitution.py``)."""

from __future__ import annotations

import resource

import pytest

from onprem_gateway.core.eas_request import parse
from onprem_gateway.proxy import ProxySettings, Timeouts, Upstream
from onprem_gateway.proxy.events import build_event, next_event_id
from onprem_gateway.proxy.metrics import UPSTREAM_BUCKETS, ProxyMetrics, merge
from onprem_gateway.proxy.responses import local_response
from onprem_gateway.proxy.settings import SettingsError
from onprem_gateway.proxy.state import connection_limit
from seg_contract import Access


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


def test_connection_limit_follows_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (20_000, 20_000))
    assert connection_limit(9_500) == 9_500
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    assert connection_limit(9_500) == 480
