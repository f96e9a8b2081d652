"""The console's roster on moto: every device of a 250,000-device tenant searchable with
exact totals, changes reaching warm API functions through the journal (not a scan), the
compactor's snapshots, rebuilds, and the bounded per-minute statistics item."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from lambdas.adapters.dynamodb_email_devices import BATCHES_PER_ITEM, DynamoDbEmailDevices
from lambdas.adapters.dynamodb_roster import DynamoDbRoster
from lambdas.api.deps import clock
from lambdas.domain.email_view import ActivityCount
from lambdas.handlers import payload_reader
from lambdas.usecases.roster import RosterCache, compact, fold
from seg_local import fleet
from tests.integration.control_api.conftest import Ctx, enrollment, register, sqs_event
from tests.integration.control_api.test_api_dashboard import NOW, ev
from tests.support.aws import AwsEnv
from tests.support.events import LambdaContext

FLEET = 250_000


class CallCounter:
    """The DynamoDB calls made, by operation and table."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model: Any, params: Any, **_: Any) -> None:
        tables = params.get("TableName") or ",".join(sorted(params.get("RequestItems", {})))
        self.calls[(model.name, str(tables))] += 1


def listing(ctx: Ctx, **query: Any) -> dict[str, Any]:
    response = ctx.client.get("/console/v1/email-devices", params=query, headers=ctx.viewer())
    assert response.status_code == 200, response.text
    return response.json()


def report(ctx: Ctx, credential: str, *events: dict[str, Any]) -> None:
    response = ctx.client.post(
        "/gateway/v1/access-events",
        json={"node_id": "node-1", "events": list(events)},
        headers=ctx.gw(credential),
    )
    assert response.status_code == 202, response.text
    payload_reader.function.root.cache_clear()
    assert payload_reader.handler(sqs_event(ctx.aws, "payload"), LambdaContext()) == {
        "batchItemFailures": []
    }


def roster(env: AwsEnv) -> DynamoDbRoster:
    return DynamoDbRoster(env.tables["roster"], env.dynamodb)


def view(env: AwsEnv) -> DynamoDbEmailDevices:
    return DynamoDbEmailDevices(
        env.tables["email_devices"],
        env.dynamodb,
        devices_table=env.tables["devices"],
        overrides_table=env.tables["manual_overrides"],
    )


@pytest.fixture
def pinned(ctx: Ctx) -> Iterator[Ctx]:
    ctx.client.app.dependency_overrides[clock] = lambda: NOW  # type: ignore[attr-defined]
    yield ctx


def test_exact_totals_and_search_over_250000_devices(pinned: Ctx) -> None:
    """Every filter's total is exact at 250,000 devices (no window, no cap), search finds
    the oldest device, and changes arriving through the gateway path move the totals
    by exactly what they change."""
    ctx = pinned
    built = fleet.build(FLEET, NOW)
    r = roster(ctx.aws)
    fleet.publish(snapshots=r, journal=r, view=view(ctx.aws), n=FLEET, now=NOW)
    obs = built.observations
    states = collections.Counter(obs["access_state"])
    unknown = sum(rule == "unknown_device" for rule in obs["rule"])
    assert listing(ctx, limit=1)["total"] == FLEET
    assert listing(ctx, access_state="block", limit=1)["total"] == states["block"]
    assert listing(ctx, access_state="unknown", limit=1)["total"] == unknown
    compliance = collections.Counter(fleet.compliance_of(i) for i in range(FLEET))
    for state in ("compliant", "non_compliant", "unknown"):
        assert listing(ctx, compliance_state=state, limit=1)["total"] == compliance[state]
    cluster_b = sum(c == fleet.CLUSTERS[1] for c in obs["cluster_id"])
    assert listing(ctx, cluster_id=fleet.CLUSTERS[1], limit=1)["total"] == cluster_b
    cutoff = (NOW - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stale = sum(seen < cutoff for seen in obs["last_seen"])
    assert listing(ctx, not_seen_days=60, node="node-2", limit=1)["total"] == sum(
        seen < cutoff and node == "node-2"
        for seen, node in zip(obs["last_seen"], obs["last_node"], strict=True)
    )
    assert 0 < stale < FLEET
    # The oldest device: neither recent nor anywhere near the first page.
    oldest = fleet.user_of(FLEET - 1)
    found = listing(ctx, q=oldest)
    assert (found["total"], found["items"][0]["device_id"]) == (1, fleet.device_of(FLEET - 1))
    by_model = listing(ctx, sort="model", order="asc", compliance_state="non_compliant", limit=3)
    assert by_model["total"] == compliance["non_compliant"]
    assert [i["model"] for i in by_model["items"]] == ["Galaxy S21"] * 3

    # Through the gateway path: one allowed fleet device is now blocked, one new device.
    cluster_id, credential = register(ctx)
    report(ctx, credential, ev("newcomer", "NEW1", "allow", 0))
    assert listing(ctx, limit=1)["total"] == FLEET + 1
    assert listing(ctx, access_state="block", limit=1)["total"] == states["block"]
    row = listing(ctx, q="newcomer")["items"][0]
    assert (row["cluster_id"], row["access_state"]) == (cluster_id, "allow")


def test_changes_reach_a_warm_function_through_the_journal_only(ctx: Ctx) -> None:
    _, credential = register(ctx)
    report(ctx, credential, ev("alice", "DEV1", "allow", 1), ev("bob", "dev2", "block", 2))
    assert listing(ctx)["total"] == 2  # first request: built from the tables (no snapshot)
    counter = CallCounter(ctx.aws.dynamodb)
    report(ctx, credential, ev("carol", "dev3", "quarantine", 0))
    ctx.client.post("/mdm/v1/events", json=enrollment(), headers=ctx.mdm()).raise_for_status()
    counter.calls.clear()
    page = listing(ctx, sort="user", order="asc")
    assert [i["user"] for i in page["items"]] == ["alice", "bob", "carol"]
    assert page["items"][0]["model"] == "iPhone 15"  # the enrollment, through the journal
    email_devices = ctx.aws.tables["email_devices"]
    scans = {op for (op, table) in counter.calls if email_devices in table and op != "BatchGetItem"}
    assert scans == set(), counter.calls  # no Query or Scan of the view per request


def test_the_compactor_publishes_what_warm_functions_hold(ctx: Ctx) -> None:
    _, credential = register(ctx)
    report(ctx, credential, ev("alice", "DEV1", "allow", 0), ev("bob", "dev2", "block", 0))
    ctx.client.post("/mdm/v1/events", json=enrollment(), headers=ctx.mdm()).raise_for_status()
    r, v = roster(ctx.aws), view(ctx.aws)
    first = compact(snapshots=r, journal=r, view=v)
    assert (first.rebuilt, first.head.rows) == (True, 2)  # no snapshot yet: a rebuild
    report(ctx, credential, ev("carol", "dev3", "quarantine", 0))
    second = compact(snapshots=r, journal=r, view=v)
    assert (second.rebuilt, second.head.rows, second.head.epoch) == (False, 3, first.head.epoch)
    warm = RosterCache(snapshots=r, journal=r, view=v, refresh_s=0).current()
    cold = fold(snapshots=r, journal=r, view=v, force_rebuild=True).index
    assert {warm.row(s)["row_key"]: warm.row(s) for s in range(len(warm))} == {
        cold.row(s)["row_key"]: cold.row(s) for s in range(len(cold))
    }
    assert warm.row(warm.slots_of_device("alice\x1fdev1")[0])["model"] == "iPhone 15"


def test_a_cluster_cannot_change_what_another_clusters_rows_show(ctx: Ctx) -> None:
    a_id, a_cred = register(ctx, "site-a")
    b_id, b_cred = register(ctx, "site-b")
    report(ctx, a_cred, ev("alice", "DEV1", "block", 2))
    # Cluster B's gateway reports alice's device as allowed, later: it gets a row of its
    # own, and cluster A's row still says what A's gateways saw.
    report(ctx, b_cred, ev("alice", "DEV1", "allow", 1))
    rows = {i["cluster_id"]: i for i in listing(ctx, q="alice")["items"]}
    assert {c: r["access_state"] for c, r in rows.items()} == {a_id: "block", b_id: "allow"}
    assert listing(ctx, cluster_id=a_id)["total"] == 1
    detail = ctx.client.get("/console/v1/email-devices/alice/DEV1", headers=ctx.viewer()).json()
    assert {o["cluster_id"]: o["access_state"] for o in detail["observations"]} == {
        a_id: "block",
        b_id: "allow",
    }


def test_the_minute_statistics_item_stays_bounded(env: AwsEnv) -> None:
    """At most BATCHES_PER_ITEM fingerprints (16 bytes each) per item, so an item stays
    near 4 KB (5 write units) however many batches a minute brings; every batch up to
    17 items' worth is counted exactly once, redeliveries included; past that a batch is
    still counted, in an item that does not grow."""
    v = DynamoDbEmailDevices(env.tables["email_devices"], env.dynamodb, batches_per_item=16)
    minute = "2026-11-27T03:00"
    # The main item's 16, then 16 for each shard (fingerprints are hashes: they spread).
    fingerprints = [uuid.uuid4().hex[:16] for _ in range(16)] + [
        f"{shard}{uuid.uuid4().hex[:15]}" for shard in "0123456789abcdef" for _ in range(16)
    ]
    for fp in fingerprints:
        assert v.add_activity(ActivityCount(minute, 2, 1), fp)
    for fp in fingerprints[::7]:  # redelivered batches, wherever they were counted
        assert not v.add_activity(ActivityCount(minute, 2, 1), fp)
    assert v.activity([minute]) == {minute: (2 * len(fingerprints), len(fingerprints))}
    # Past the capacity: still counted, never a bigger item.
    for _ in range(40):
        v.add_activity(ActivityCount(minute, 1, 0), uuid.uuid4().hex[:16])
    items = v.stats_items(minute)
    assert 1 < len(items) <= 17
    assert all(len(i.get("batches", {}).get("SS", [])) <= 16 for i in items)
    assert v.activity([minute]) == {minute: (2 * len(fingerprints) + 40, len(fingerprints))}
    # The real bound, item by item, for the default capacity.
    full = DynamoDbEmailDevices(env.tables["email_devices"], env.dynamodb)
    for _ in range(BATCHES_PER_ITEM + 50):
        full.add_activity(ActivityCount("2026-11-27T03:01", 1, 0), uuid.uuid4().hex[:16])
    items = full.stats_items("2026-11-27T03:01")
    assert 1 < len(items) <= 17  # the minute item filled up; its shards took the rest
    for item in items:
        assert item_bytes(item) <= 4_500, item_bytes(item)  # ~4 KB: at most 5 write units


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: names plus values (strings and sets by
    their UTF-8 length, numbers by their digits, booleans one byte)."""

    def size(value: dict[str, Any]) -> int:
        ((kind, inner),) = value.items()
        if kind in ("S", "N"):
            return len(str(inner).encode())
        if kind in ("SS", "NS"):
            return sum(len(str(v).encode()) for v in inner)
        return 1

    return sum(len(name.encode()) + size(value) for name, value in item.items())
