"""The in-memory roster: newest wins per row, joins copied into rows, every filter,
search and sort exact over all rows, keyset paging that visits each row once, and a
snapshot that round-trips."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lambdas.domain.email_view import AccessObservation, email_device_key
from lambdas.ports import MdmFacts
from lambdas.usecases.roster_codec import (
    Snapshot,
    SnapshotError,
    decode_observations,
    decode_snapshot,
    encode_observations,
    encode_snapshot,
)
from lambdas.usecases.roster_index import (
    SORT_COLUMNS,
    RosterIndex,
    RosterQuery,
    os_label,
)

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def obs(
    i: int,
    *,
    state: str = "allow",
    cluster: str = "c-a",
    seconds_ago: int = 0,
    event: str = "",
    rule: str = "entry",
    node: str = "node-1",
) -> AccessObservation:
    user, device = f"user{i:04d}", f"dev{i:04d}"
    return AccessObservation(
        email_device_key=email_device_key(user, device),
        user=user,
        device_id=device,
        device_type=["iPhone", "Android", "iPad"][i % 3],
        user_agent=f"Agent/{i % 7}",
        last_seen=(NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        event_id=event or f"e{i:04d}-{seconds_ago:08d}",
        last_command="Sync",
        access_state=state,
        reason=state,
        rule=rule,
        enforced=True,
        protocol_version="16.1",
        last_node=node,
        cluster_id=cluster,
    )


def facts(i: int, compliance: str = "compliant", model: str = "Pixel 8") -> MdmFacts:
    return MdmFacts(f"mdm-{i}", model, "Android", "Android 15", "enrolled", compliance)


def everything(index: RosterIndex, query: RosterQuery) -> list[str]:
    """Every row the query matches, page by page through the keyset cursor."""
    seen: list[str] = []
    after = None
    while True:
        page = index.query(replace(query, after=after), NOW)
        seen += [index.value(s, "row_key") for s in page.slots]
        if not page.more:
            return seen
        last = page.slots[-1]
        after = (index.sort_value(last, query.sort), index.value(last, "row_key"))


def test_newest_observation_wins_in_any_order_and_replays_change_nothing() -> None:
    history = [obs(1, state=s, seconds_ago=a) for s, a in (("allow", 30), ("block", 10))]
    history.append(obs(1, state="quarantine", seconds_ago=20))
    for ordering in (history, list(reversed(history)), history + history):
        index = RosterIndex()
        for o in ordering:
            index.apply_observation(o)
        assert len(index) == 1
        assert index.value(0, "access_state") == "block"
    # A tie on time is broken by the event id, like the table's conditional write.
    index = RosterIndex()
    index.apply_observation(obs(2, event="b", state="block"))
    assert not index.apply_observation(obs(2, event="a", state="allow"))
    assert index.value(0, "access_state") == "block"


def test_a_device_seen_by_two_clusters_has_two_rows_sharing_its_join() -> None:
    index = RosterIndex()
    index.apply_observation(obs(1, cluster="c-a"))
    index.apply_observation(obs(1, cluster="c-b", state="block"))
    key = email_device_key("user0001", "dev0001")
    index.set_facts(key, facts(1, "non_compliant"))
    index.set_override(key, "block")
    rows = [index.row(s) for s in index.slots_of_device(key)]
    assert {r["cluster_id"] for r in rows} == {"c-a", "c-b"}
    assert {r["compliance_state"] for r in rows} == {"non_compliant"}
    # Pending: the override says block, cluster A's newest decision still allowed.
    assert {r["cluster_id"]: r["pending"] for r in rows} == {"c-a": "1", "c-b": ""}
    index.set_override(key, None)
    assert {index.row(s)["override"] for s in index.slots_of_device(key)} == {""}


@pytest.fixture(scope="module")
def fleet() -> tuple[RosterIndex, list[AccessObservation], dict[str, MdmFacts]]:
    rng = random.Random(3)
    index = RosterIndex()
    rows: list[AccessObservation] = []
    joined: dict[str, MdmFacts] = {}
    for i in range(3000):
        o = obs(
            i,
            state=rng.choice(["allow", "allow", "block", "quarantine"]),
            cluster=rng.choice(["c-a", "c-b"]),
            seconds_ago=rng.randrange(0, 40 * 86_400),
            rule=rng.choice(["entry", "entry", "unknown_device"]),
            node=rng.choice(["node-1", "node-2", "node-3"]),
        )
        rows.append(o)
        index.apply_observation(o)
        if i % 2:
            f = facts(
                i, rng.choice(["compliant", "non_compliant"]), rng.choice(["Pixel 8", "iPhone 15"])
            )
            joined[o.email_device_key] = f
            index.set_facts(o.email_device_key, f)
    return index, rows, joined


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (RosterQuery(access_state="block"), lambda o, f: o.access_state == "block"),
        (RosterQuery(access_state="unknown"), lambda o, f: o.rule == "unknown_device"),
        (
            RosterQuery(compliance_state="unknown"),
            lambda o, f: f is None,
        ),
        (
            RosterQuery(compliance_state="non_compliant", cluster_id="c-b"),
            lambda o, f: (
                f is not None and f.compliance_state == "non_compliant" and o.cluster_id == "c-b"
            ),
        ),
        (RosterQuery(node="node-2"), lambda o, f: o.last_node == "node-2"),
        (
            RosterQuery(not_seen_days=30),
            lambda o, f: o.last_seen < (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        ),
        (RosterQuery(q="ER012"), lambda o, f: "er012" in o.user),
        (RosterQuery(q="iphone 15"), lambda o, f: f is not None and f.model == "iPhone 15"),
        (
            RosterQuery(q="ipad", access_state="allow"),
            lambda o, f: o.device_type == "iPad" and o.access_state == "allow",
        ),
    ],
)
def test_filters_and_search_are_exact_over_every_row(fleet, query, expected) -> None:
    index, rows, joined = fleet
    wanted = {o.observation_key for o in rows if expected(o, joined.get(o.email_device_key))}
    assert wanted, "the case matches nothing: it proves nothing"
    assert index.query(replace(query, limit=5), NOW).total == len(wanted)
    assert set(everything(index, replace(query, limit=97))) == wanted


@pytest.mark.parametrize("column", SORT_COLUMNS)
@pytest.mark.parametrize("descending", [False, True])
def test_every_column_sorts_and_pages_each_row_once(fleet, column: str, descending: bool) -> None:
    index, _, _ = fleet
    query = RosterQuery(sort=column, descending=descending, limit=250, access_state="block")
    keys = everything(index, query)
    assert len(keys) == len(set(keys)) == index.query(query, NOW).total
    order = [(index.sort_value(index.slot_of(k), column), k) for k in keys]  # type: ignore[arg-type]
    assert order == sorted(order, reverse=descending)


def test_counts_partition_the_rows(fleet) -> None:
    index, rows, _ = fleet
    counted = index.counts(NOW - timedelta(hours=1))
    assert sum(counted.counts.values()) == len(rows)
    assert counted.counts["unknown"] == sum(o.rule == "unknown_device" for o in rows)
    cutoff = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert counted.blocked_since == sum(
        o.access_state != "allow" and o.last_seen >= cutoff for o in rows
    )


def test_a_snapshot_round_trips_every_row_fact_and_override(fleet) -> None:
    index, _, joined = fleet
    index.set_override(next(iter(joined)), "allow")
    data = encode_snapshot(Snapshot.of(index, "2026-11-27T02:58:00.000000Z"))
    again = RosterIndex()
    snapshot = decode_snapshot(data)
    snapshot.load_into(again)
    assert snapshot.watermark == "2026-11-27T02:58:00.000000Z"
    assert len(again) == len(index)
    for slot in range(len(index)):
        assert again.row(again.slot_of(index.value(slot, "row_key"))) == index.row(slot)  # type: ignore[arg-type]
    with pytest.raises(SnapshotError):
        decode_snapshot(b"not a snapshot")


def test_journal_observations_round_trip() -> None:
    batch = [obs(1), obs(2, state="block", cluster="c-b")]
    assert decode_observations(encode_observations(batch)) == batch


@pytest.mark.parametrize(
    ("platform", "version", "shown"),
    [
        ("Android", "Android 15", "Android 15"),
        ("iOS", "18.1", "iOS 18.1"),
        ("", "17.2", "17.2"),
        ("iPadOS", "", "iPadOS"),
        ("android", "ANDROID 14", "ANDROID 14"),
    ],
)
def test_the_os_column_names_the_platform_once(platform: str, version: str, shown: str) -> None:
    assert os_label(platform, version) == shown
