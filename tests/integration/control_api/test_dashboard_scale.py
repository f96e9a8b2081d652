"""The dashboard's reads stay O(page): index queries with native paging for the default
view and the access-state filter, a batch join per page, counts (exact, recounted at
most every few seconds) for totals and the summary, a bounded window for search and
other sorts. Costs are asserted as DynamoDB calls and items read, not time."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices
from lambdas.api.deps import clock
from lambdas.domain.compliance import ComplianceResult, ComplianceState
from lambdas.usecases import dashboard
from lambdas.usecases.email_view import AccessObservation, email_device_key, tally
from tests.integration.control_api.conftest import Ctx, enrollment
from tests.support.aws import AwsEnv

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def obs(
    i: int, decision: str = "allow", seconds_ago: int = 0, rule: str = "entry", event: str = ""
) -> AccessObservation:
    user, device = f"user{i:02d}", f"dev{i:02d}"
    at = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return AccessObservation(
        email_device_key=email_device_key(user, device),
        user=user,
        device_id=device,
        device_type="iPhone",
        user_agent="Apple-iPhone/1",
        last_seen=at,
        event_id=event or f"e-{i}-{seconds_ago}-{decision}",
        last_command="Sync",
        access_state=decision,
        reason=decision,
        rule=rule,
        enforced=True,
        protocol_version="16.1",
        last_node="node-1",
        cluster_id="c-1",
    )


def view(env: AwsEnv, **more: Any) -> DynamoDbEmailDevices:
    return DynamoDbEmailDevices(
        env.tables["email_devices"],
        env.dynamodb,
        devices_table=env.tables["devices"],
        overrides_table=env.tables["manual_overrides"],
        **more,
    )


def recount(v: DynamoDbEmailDevices) -> dict[str, int]:
    return dict(Counter(tally(r.access_state, r.rule) for r in v.all_rows()))


def nonzero(tallies: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in tallies.items() if n}


def test_counts_are_exact_under_redelivery_reordering_and_transitions(env: AwsEnv) -> None:
    v = view(env, tallies_ttl_s=0)
    rng = random.Random(7)
    history: list[AccessObservation] = []
    for step in range(60):
        if history and rng.random() < 0.3:
            o = rng.choice(history)  # a redelivered or late (older) event
        else:
            decision = rng.choice(["allow", "allow", "block", "quarantine"])
            rule = "unknown_device" if rng.random() < 0.2 else "entry"
            o = obs(rng.randrange(6), decision, seconds_ago=rng.randrange(600), rule=rule)
            o = replace(o, event_id=f"ev-{step}")
            history.append(o)
        v.apply_observation(o)
        if step % 15 == 14:
            assert nonzero(v.tallies()) == recount(v)
    newest: dict[str, AccessObservation] = {}
    for o in history:
        held = newest.get(o.email_device_key)
        if held is None or o.newer_than(held):
            newest[o.email_device_key] = o
    assert {r.email_device_key: r for r in v.all_rows()} == newest
    assert nonzero(v.tallies()) == dict(
        Counter(tally(o.access_state, o.rule) for o in newest.values())
    )


def test_a_count_is_reused_for_ten_times_what_it_took_at_most_the_ttl(env: AwsEnv) -> None:
    now = [100.0]

    def clock() -> float:  # every reading moves 0.1 s: a count "takes" 0.1 s
        now[0] += 0.1
        return now[0]

    v = view(env, tallies_ttl_s=5, clock=clock)
    v.apply_observation(obs(1, "block"))
    assert nonzero(v.tallies()) == {"block": 1}  # counted 100.1-100.2, reused until 101.2
    v.apply_observation(obs(2, "allow", rule="unknown_device"))
    now[0] = 101.0
    assert nonzero(v.tallies()) == {"block": 1}  # the reused count
    now[0] = 101.2
    assert nonzero(v.tallies()) == {"block": 1, "allow~unknown": 1}
    slow = view(env, tallies_ttl_s=0.5, clock=clock)
    slow.tallies()
    v.apply_observation(obs(3, "quarantine"))
    now[0] += 0.35
    assert nonzero(slow.tallies()) == {"block": 1, "allow~unknown": 1}
    now[0] += 0.2  # past the TTL, although 10 x 0.1 s is not over
    assert nonzero(slow.tallies()) == {"block": 1, "allow~unknown": 1, "quarantine": 1}


class DynamoCalls:
    """The DynamoDB operations a piece of code makes, and the items they return."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.items = 0
        self._client = client
        client.meta.events.register("after-call.dynamodb.*", self._seen)

    def _seen(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        self.items += len(parsed.get("Items", []))
        self.items += sum(len(v) for v in parsed.get("Responses", {}).values())

    def reset(self) -> None:
        self.calls.clear()
        self.items = 0

    def close(self) -> None:
        self._client.meta.events.unregister("after-call.dynamodb.*", self._seen)


@pytest.fixture
def many(ctx: Ctx) -> Iterator[tuple[Ctx, DynamoCalls]]:
    """40 email devices (every fourth blocked), 10 of them enrolled in the MDM."""
    ctx.client.app.dependency_overrides[clock] = lambda: NOW  # type: ignore[attr-defined]
    v = view(ctx.aws)
    for i in range(40):
        v.apply_observation(obs(i, "block" if i % 4 == 0 else "allow", seconds_ago=i * 100 + 50))
    for i in range(0, 40, 4):
        body = enrollment(f"mdm-{i}", f"user{i:02d}", f"DEV{i:02d}")
        ctx.client.post("/mdm/v1/events", json=body, headers=ctx.mdm()).raise_for_status()
    calls = DynamoCalls(ctx.aws.dynamodb)
    yield ctx, calls
    calls.close()


def listing(ctx: Ctx, **query: Any) -> dict[str, Any]:
    response = ctx.client.get("/console/v1/email-devices", params=query, headers=ctx.admin())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_default_view_pages_through_the_index_reading_only_each_page(many) -> None:
    ctx, calls = many
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        calls.reset()
        page = listing(ctx, limit=7, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert page["total"] == 40
        # The page (plus one row to know whether more follow), its email links and
        # overrides, its MDM records, the counters: never the other devices.
        assert "Scan" not in calls.calls, calls.calls
        # One index query for the page (plus, every few seconds, one count per state).
        assert calls.calls["Query"] in (1, 4) and calls.calls["BatchGetItem"] <= 2
        assert calls.items <= 8 + 2 * 7 + 7
        seen += [i["user"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 6  # 6 * 7 >= 40: no empty page at the end
    assert seen == [f"user{i:02d}" for i in range(40)]
    enrolled = listing(ctx, limit=1)["items"][0]
    assert (enrolled["mdm_device_id"], enrolled["enrollment_state"]) == ("mdm-0", "enrolled")


def test_oldest_first_and_the_access_state_filter_page_through_their_index(many) -> None:
    ctx, calls = many
    oldest = listing(ctx, limit=5, order="asc")
    assert [i["user"] for i in oldest["items"]] == [f"user{i:02d}" for i in range(39, 34, -1)]
    blocked: list[str] = []
    cursor = None
    while True:
        calls.reset()
        page = listing(ctx, access_state="block", limit=4, **({"cursor": cursor} if cursor else {}))
        assert page["total"] == 10 and "Scan" not in calls.calls
        assert calls.items <= 5 + 2 * 4 + 4
        blocked += [i["user"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert blocked == [f"user{i:02d}" for i in range(0, 40, 4)]


def test_summary_reads_counters_not_rows(many) -> None:
    ctx, calls = many
    calls.reset()
    body = ctx.client.get("/console/v1/email-devices/summary", headers=ctx.admin()).json()
    assert body["counts"] == {"allow": 30, "block": 10, "quarantine": 0, "unknown": 0}
    # Seen in the last hour: devices 0..35 (i * 100 + 50 s); blocked: 0, 4, ..., 32.
    assert body["blocked_last_hour"] == 9
    assert "Scan" not in calls.calls
    assert calls.items == 0  # counts only (and the series' minute counters: none here)


def test_search_and_other_sorts_are_exact_within_the_window_and_bounded_by_it(
    many, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, calls = many
    page = listing(ctx, q="USER1", sort="user", order="asc", limit=3)
    assert [i["user"] for i in page["items"]] == ["user10", "user11", "user12"]
    assert page["total"] == 10
    devices = ctx.client.app.state.container.devices  # type: ignore[attr-defined]
    for mdm_id in ("mdm-0", "mdm-8"):
        devices.set_compliance(mdm_id, ComplianceResult(ComplianceState.COMPLIANT), NOW)
    compliant = listing(ctx, compliance_state="compliant", limit=1)
    assert compliant["total"] == 2 and compliant["items"][0]["user"] == "user00"
    page_two = listing(ctx, compliance_state="compliant", cursor=compliant["next_cursor"])
    assert [i["user"] for i in page_two["items"]] == ["user08"] and not page_two["next_cursor"]
    assert listing(ctx, compliance_state="unknown")["total"] == 38
    monkeypatch.setattr(dashboard, "WINDOW_CAP", 12)
    calls.reset()
    capped = listing(ctx, q="user", sort="device_id", order="desc", limit=5)
    # Only the 12 most recently seen devices are searched: user00..user11.
    assert capped["total"] == 12
    assert [i["user"] for i in capped["items"]] == [f"user{i:02d}" for i in (11, 10, 9, 8, 7)]
    assert "Scan" not in calls.calls and calls.items <= 13 + 5 + 2 * 5 + 5
    # The compliance filter joins the 6 most recently seen devices only: user00 and
    # user04 are enrolled; of them user00 is compliant (user08 is beyond the cap).
    monkeypatch.setattr(dashboard, "JOIN_CAP", 6)
    capped = listing(ctx, compliance_state="compliant")
    assert capped["total"] == 1 and [i["user"] for i in capped["items"]] == ["user00"]


def test_a_link_to_an_id_the_device_no_longer_reports_does_not_join(ctx: Ctx) -> None:
    v = view(ctx.aws)
    v.apply_observation(obs(1))
    first = enrollment("mdm-1", "user01", "dev01")
    ctx.client.post("/mdm/v1/events", json=first, headers=ctx.mdm()).raise_for_status()
    [row] = listing(ctx)["items"]
    assert row["mdm_device_id"] == "mdm-1"
    moved = {**enrollment("mdm-1", "user01", "dev99"), "occurred_at": "2026-11-27T02:00:00Z"}
    ctx.client.post("/mdm/v1/events", json=moved, headers=ctx.mdm()).raise_for_status()
    [row] = listing(ctx)["items"]
    assert (row["mdm_device_id"], row["enrollment_state"]) == ("", "unknown")


def test_a_forged_cursor_is_refused_with_a_clear_422(many) -> None:
    ctx, _ = many
    forged = dashboard.encode_cursor("", "", dashboard.ListQuery())
    response = ctx.client.get(
        "/console/v1/email-devices", params={"cursor": forged}, headers=ctx.admin()
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "cursor is not one this API issued"


def test_tallies_partition_into_state_totals_and_summary_counts() -> None:
    assert tally("block", "unknown_device") == "block~unknown"
    assert tally("block", "entry") == "block"
    tallies = {"allow": 5, "block": 2, "block~unknown": 3, "allow~unknown": 1, "quarantine": 4}
    assert dashboard.total_of(tallies, None) == 15
    assert dashboard.total_of(tallies, "block") == 5
    assert dashboard.total_of(tallies, "quarantine") == 4
    assert dashboard.summary_counts(tallies) == {
        "allow": 5,
        "block": 2,
        "quarantine": 4,
        "unknown": 4,
    }
