"""Folded access events (``AccessEvent.count``, ``first_at``) as the control plane reads
them: activity counts every request they stand for, history keeps their count, and
events of older gateways (and rows stored before) read as one request."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lambdas.domain import access_history as history
from lambdas.domain import email_view
from lambdas.domain.timefmt import format_instant
from lambdas.usecases.access_events import accept_access_events
from seg_contract import AccessEvent, AccessEventBatch

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def ev(at: datetime, decision: str = "allow", count: int = 1, first: datetime | None = None):
    return AccessEvent(
        event_id=uuid.uuid4().hex,
        at=at,
        node_id="n1",
        user="alice",
        device_id="dev1",
        command="Sync",
        decision=decision,
        reason="r",
        count=count,
        first_at=first,
    )


def test_an_event_without_count_is_one_request_and_a_span_must_be_ordered() -> None:
    wire = ev(T0).model_dump_json(exclude={"count", "first_at"})
    assert AccessEvent.model_validate_json(wire).count == 1
    with pytest.raises(ValidationError):
        ev(T0, count=2, first=T0 + timedelta(seconds=1))
    with pytest.raises(ValidationError):
        ev(T0, count=0)


def test_activity_spreads_a_folded_event_over_its_minutes() -> None:
    counts = email_view.activity(
        [ev(T0 + timedelta(minutes=2, seconds=30), "block", 7, T0 + timedelta(seconds=10))]
    )
    assert [(c.minute, c.requests, c.blocks) for c in counts] == [
        ("2026-11-27T02:00", 3, 3),
        ("2026-11-27T02:01", 2, 2),
        ("2026-11-27T02:02", 2, 2),
    ]
    one_minute = email_view.activity([ev(T0 + timedelta(seconds=50), count=40, first=T0)])
    assert [(c.minute, c.requests, c.blocks) for c in one_minute] == [("2026-11-27T02:00", 40, 0)]


@given(st.integers(1, 10_000), st.integers(0, 6 * 3600), st.integers(0, 6 * 3600))
def test_spread_sums_to_the_count_within_the_span(count: int, a: int, b: int) -> None:
    first, last = T0 + timedelta(seconds=min(a, b)), T0 + timedelta(seconds=max(a, b))
    parts = email_view.spread(count, first, last)
    assert sum(n for _, n in parts) == count and all(n > 0 for _, n in parts)
    assert email_view.minute_bucket(first) <= parts[0][0]
    assert parts[-1][0] == email_view.minute_bucket(last)


def test_history_keeps_the_count_and_reads_older_rows() -> None:
    folded = ev(T0 + timedelta(minutes=30), count=120, first=T0)
    (entries,) = history.per_device([folded], "c1", None).values()
    (entry,) = entries
    assert (entry.count, entry.first_at) == (120, format_instant(T0))
    assert history.HistoryEvent.of_row(entry.as_row()) == entry
    old_row = entry.as_row()[:9]
    assert history.HistoryEvent.of_row(old_row).count == 1


def test_intake_answers_how_many_requests_a_batch_stands_for() -> None:
    class Queue:
        def send(self, bodies: list[str]) -> None:
            self.bodies = bodies

    batch = AccessEventBatch(node_id="n1", events=(ev(T0), ev(T0, count=9, first=T0)))
    assert accept_access_events(batch, "c1", Queue(), T0) == 10
