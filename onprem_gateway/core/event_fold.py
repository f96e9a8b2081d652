"""Folding access events while a node cannot deliver them: many requests of one device
with one outcome become one record that counts them.

A node cut off from the control plane (or air-gapped) would otherwise spool every
request (~350 B each): at 2,000 req/s its spool (256 MiB) starts evicting after minutes.
What the console shows from access events is, per device, the newest request's facts
(last seen, decision, rule, reason, command, node), its recent history, and requests and
blocks per minute. A folded record keeps exactly that: the fields of the *newest* event
it folds, how many it folds (``count``) and when the first was (``first_at``).

Events fold together when they share a ``FoldKey``: the (user, device) identity, the
decision, whether it was enforced, the rule that decided, and a time window. Blocks and
quarantines (what an admin must never lose) fold per minute; allows, by far the bulk,
fold per ``allow_window_s`` (an hour by default): 10,000 devices then cost ~10,000
records an hour, which keeps a day within the spool. Last-seen stays exact whatever the
window (the record carries its newest event's time).

Ids: a record of one event keeps that event's id (it is that event); a record of more is
named by a hash of its first event's id: stable (it is written once, then resent byte
for byte) and distinct from every other record, so the control plane's de-duplication
by id still holds.

Pure: values in, values out; the clock is a parameter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from seg_contract import Access, AccessEvent

BLOCK_WINDOW_S = 60
ALLOW_WINDOW_S = 3600


@dataclass(frozen=True)
class FoldWindows:
    """How long a window is, by outcome (seconds). Blocks: at least per minute."""

    block_window_s: int = BLOCK_WINDOW_S
    allow_window_s: int = ALLOW_WINDOW_S

    def of(self, event: AccessEvent) -> int:
        allowed = event.decision is Access.ALLOW
        return self.allow_window_s if allowed else min(self.block_window_s, BLOCK_WINDOW_S)


DEFAULT_WINDOWS = FoldWindows()

# (user, device_id, decision, enforced, rule, window start in epoch seconds, window length)
FoldKey = tuple[str, str, str, bool, str, int, int]


@dataclass(frozen=True)
class Aggregate:
    """Events folded so far under one key."""

    first: AccessEvent  # the first folded (names the record)
    last: AccessEvent  # the newest, by (at, event_id) as the control plane orders them
    count: int
    first_at: datetime
    end: float  # the window's end (epoch seconds)


def fold_key(event: AccessEvent, windows: FoldWindows) -> FoldKey:
    length = windows.of(event)
    start = int(event.at.timestamp()) // length * length
    return (
        event.user,
        event.device_id,
        event.decision.value,
        event.enforced,
        event.rule,
        start,
        length,
    )


def _newer(a: AccessEvent, b: AccessEvent) -> bool:
    return (a.at, a.event_id) > (b.at, b.event_id)


def _counted(event: AccessEvent) -> tuple[int, datetime]:
    return event.count, event.first_at or event.at


def fold(
    table: Mapping[FoldKey, Aggregate],
    events: Iterable[AccessEvent],
    windows: FoldWindows = DEFAULT_WINDOWS,
) -> dict[FoldKey, Aggregate]:
    """``table`` with ``events`` folded in (a new dict; ``table`` is left as it was).
    An event that is itself a folded record adds its count and span."""
    out = dict(table)
    for event in events:
        key = fold_key(event, windows)
        count, first_at = _counted(event)
        held = out.get(key)
        if held is None:
            out[key] = Aggregate(event, event, count, first_at, float(key[5] + key[6]))
            continue
        out[key] = Aggregate(
            held.first,
            event if _newer(event, held.last) else held.last,
            held.count + count,
            min(held.first_at, first_at),
            held.end,
        )
    return out


def folded_id(first_event_id: str) -> str:
    return "f" + hashlib.sha256(b"fold\n" + first_event_id.encode()).hexdigest()[:31]


def record(aggregate: Aggregate) -> AccessEvent:
    """The access event that stands for ``aggregate``."""
    if aggregate.count == 1:
        return aggregate.first
    return aggregate.last.model_copy(
        update={
            "event_id": folded_id(aggregate.first.event_id),
            "count": aggregate.count,
            "first_at": aggregate.first_at,
        }
    )


def close_due(
    table: Mapping[FoldKey, Aggregate], now: float, grace_s: float = 2.0
) -> tuple[list[AccessEvent], dict[FoldKey, Aggregate]]:
    """(records of the windows that ended at least ``grace_s`` before ``now``, the rest).
    The grace lets events of a window's last moments (a worker's flush) join it."""
    closed: list[AccessEvent] = []
    remaining: dict[FoldKey, Aggregate] = {}
    for key, aggregate in table.items():
        if aggregate.end + grace_s <= now:
            closed.append(record(aggregate))
        else:
            remaining[key] = aggregate
    return sorted(closed, key=lambda e: e.event_id), remaining


def records(table: Mapping[FoldKey, Aggregate]) -> list[AccessEvent]:
    """Every aggregate of ``table`` as its record, in a stable order."""
    return sorted((record(a) for a in table.values()), key=lambda e: e.event_id)


def total(table: Mapping[FoldKey, Aggregate]) -> int:
    """How many requests ``table`` holds."""
    return sum(a.count for a in table.values())
