"""Folding access events (``core.event_fold``): counts and last-seen are kept exactly,
blocks per device per minute, ids stable and distinct."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core import event_fold
from onprem_gateway.core.event_fold import FoldWindows, close_due, fold, folded_id, records
from seg_contract import Access, AccessEvent

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def ev(
    n: int,
    *,
    seconds: float = 0.0,
    user: str = "alice",
    device: str = "dev1",
    decision: Access = Access.ALLOW,
    command: str = "Sync",
    rule: str = "",
) -> AccessEvent:
    return AccessEvent(
        event_id=f"{n:032x}",
        at=T0 + timedelta(seconds=seconds),
        node_id="n1",
        user=user,
        device_id=device,
        command=command,
        decision=decision,
        reason=f"{decision.value} (test)",
        rule=rule,
    )


def test_one_device_one_outcome_one_window_is_one_record_with_the_newest_facts() -> None:
    events = [ev(1, seconds=5, command="Ping"), ev(2, seconds=50, command="Sync"), ev(3)]
    (record,) = records(fold({}, events))
    assert record.count == 3
    assert record.first_at == T0 and record.at == T0 + timedelta(seconds=50)
    assert record.command == "Sync"  # the newest event's facts
    assert record.event_id == folded_id(f"{1:032x}") != f"{1:032x}"


def test_a_single_event_is_sent_as_itself() -> None:
    (record,) = records(fold({}, [ev(7)]))
    assert record == ev(7) and record.count == 1 and record.first_at is None


def test_blocks_fold_per_minute_allows_per_allow_window() -> None:
    windows = FoldWindows(block_window_s=3600, allow_window_s=3600)  # blocks stay per minute
    events = [ev(n, seconds=n * 30, decision=Access.BLOCK) for n in range(6)]  # 3 minutes
    events += [ev(100 + n, seconds=n * 30) for n in range(6)]
    out = records(fold({}, events, windows))
    blocks = [r for r in out if r.decision is Access.BLOCK]
    allows = [r for r in out if r.decision is Access.ALLOW]
    assert [r.count for r in blocks] == [2, 2, 2] and len(allows) == 1
    assert allows[0].count == 6


def test_devices_outcomes_and_rules_never_mix() -> None:
    events = [
        ev(1),
        ev(2, device="dev2"),
        ev(3, user="bob"),
        ev(4, decision=Access.QUARANTINE),
        ev(5, decision=Access.BLOCK, rule="r1"),
        ev(6, decision=Access.BLOCK, rule="r2"),
    ]
    assert len(fold({}, events)) == 6


def test_fold_is_pure_and_incremental() -> None:
    first = fold({}, [ev(1), ev(2)])
    snapshot = dict(first)
    second = fold(first, [ev(3)])
    assert first == snapshot  # untouched
    assert records(second) == records(fold({}, [ev(1), ev(2), ev(3)]))


def test_windows_close_after_their_end_and_a_grace() -> None:
    table = fold({}, [ev(1, decision=Access.BLOCK), ev(2)])  # a minute block, an hour allow
    minute_end = T0.timestamp() + 60
    closed, remaining = close_due(table, minute_end + 1.0, grace_s=2.0)
    assert not closed and len(remaining) == 2
    closed, remaining = close_due(table, minute_end + 2.0, grace_s=2.0)
    assert [r.decision for r in closed] == [Access.BLOCK] and len(remaining) == 1
    closed, remaining = close_due(remaining, T0.timestamp() + 3602, grace_s=2.0)
    assert [r.decision for r in closed] == [Access.ALLOW] and not remaining


def test_refolding_folded_records_adds_counts_and_spans() -> None:
    once = records(fold({}, [ev(n, seconds=n) for n in range(10)]))
    again = records(fold({}, [*once, ev(99, seconds=59)]))
    assert [r.count for r in again] == [11]
    assert again[0].first_at == T0 and again[0].at == T0 + timedelta(seconds=59)


# --- properties ---------------------------------------------------------------------------

EVENTS = st.lists(
    st.builds(
        lambda n, s, u, d, dec: ev(n, seconds=s, user=u, device=d, decision=dec),
        st.integers(0, 10**9),
        st.floats(0, 3 * 3600, allow_nan=False),
        st.sampled_from(["alice", "bob", ""]),
        st.sampled_from(["dev1", "dev2", ""]),
        st.sampled_from(list(Access)),
    ),
    max_size=60,
    unique_by=lambda e: e.event_id,
)


def _last_seen(events: list[AccessEvent]) -> dict[tuple[str, str], datetime]:
    out: dict[tuple[str, str], datetime] = {}
    for e in events:
        key = (e.user, e.device_id)
        out[key] = max(out.get(key, e.at), e.at)
    return out


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.integers(0, 60))
def test_folding_keeps_the_total_and_every_devices_last_seen(
    events: list[AccessEvent], cut: int
) -> None:
    # Folded in two commits, then closed at some instant: the same totals.
    table = fold(fold({}, events[:cut]), events[cut:])
    closed, remaining = close_due(table, T0.timestamp() + 5400)
    out = closed + records(remaining)
    assert sum(r.count for r in out) == len(events) == event_fold.total(table)
    assert _last_seen(out) == _last_seen(events)

    # A block or quarantine is kept per device per minute: some record of its device,
    # outcome and rule spans it within that same minute.
    def minute(at: datetime) -> datetime:
        return at.replace(second=0, microsecond=0)

    for e in events:
        if e.decision is Access.ALLOW:
            continue
        assert any(
            (r.user, r.device_id, r.decision, r.rule) == (e.user, e.device_id, e.decision, e.rule)
            and (r.first_at or r.at) <= e.at <= r.at
            and minute(r.first_at or r.at) == minute(r.at) == minute(e.at)
            for r in out
        )
    # Ids: distinct, and a record of one event is that event.
    assert len({r.event_id for r in out}) == len(out)
    assert all(r in events for r in out if r.count == 1)
