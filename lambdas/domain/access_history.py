"""Each device's recent access events, for its page in the console: time, node, command,
decision, rule and reason of its last ``MAX_EVENTS`` requests, per cluster that saw it.

The payload reader merges every batch's events into one bounded list per (cluster, email
device) (``AccessHistoryStore``): the merge keeps the newest ``MAX_EVENTS`` by
(time, event id) and drops event ids it already holds, so a redelivered batch changes
nothing and the list never grows past its bound. Times are clamped to the batch's
receipt, as the view's are. The list expires ``RETENTION`` after its newest event.

A folded event (a node that could not deliver folded many requests of one outcome into
one record, ``AccessEvent.count``) is one entry of the list with its ``count`` and the
time of its first request (``first_at``); rows stored before these existed read as one
request.

Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.email_view import clamped, observation_key
from lambdas.domain.timefmt import format_instant
from seg_contract import AccessEvent, entry_key
from seg_contract.identity import normalize_device_id, normalize_user

MAX_EVENTS = 50
RETENTION = timedelta(days=30)
FIELDS = (
    "at",
    "event_id",
    "node",
    "command",
    "decision",
    "rule",
    "reason",
    "enforced",
    "http_status",
    "count",
    "first_at",
)


@dataclass(frozen=True)
class HistoryEvent:
    at: str  # format_instant()
    event_id: str
    node: str
    command: str
    decision: str
    rule: str
    reason: str
    enforced: bool
    http_status: int
    count: int = 1
    first_at: str = ""  # format_instant() of the first folded request; "" for one

    def as_row(self) -> list[object]:
        return [getattr(self, f) for f in FIELDS]

    @staticmethod
    def of_row(row: Sequence[object]) -> HistoryEvent:
        # Rows stored before ``count`` and ``first_at`` existed are shorter.
        values: dict[str, object] = {"count": 1, "first_at": ""}
        values.update(zip(FIELDS, row, strict=False))
        return HistoryEvent(
            at=str(values["at"]),
            event_id=str(values["event_id"]),
            node=str(values["node"]),
            command=str(values["command"]),
            decision=str(values["decision"]),
            rule=str(values["rule"]),
            reason=str(values["reason"]),
            enforced=bool(values["enforced"]),
            http_status=int(str(values["http_status"])),
            count=int(str(values["count"])),
            first_at=str(values["first_at"]),
        )


def per_device(
    events: Iterable[AccessEvent], cluster_id: str, received_at: datetime | None
) -> dict[str, list[HistoryEvent]]:
    """A batch's events by observation key (events that name no device are left out)."""
    out: dict[str, list[HistoryEvent]] = {}
    for event in events:
        user, device_id = normalize_user(event.user), normalize_device_id(event.device_id)
        if not user or not device_id:
            continue
        key = observation_key(cluster_id, entry_key(user, device_id))
        out.setdefault(key, []).append(
            HistoryEvent(
                at=format_instant(clamped(event.at, received_at)),
                event_id=event.event_id,
                node=event.node_id,
                command=event.command,
                decision=event.decision.value,
                rule=event.rule,
                reason=event.reason,
                enforced=event.enforced,
                http_status=event.http_status,
                count=event.count,
                first_at=(
                    format_instant(clamped(event.first_at, received_at))
                    if event.first_at is not None and event.count > 1
                    else ""
                ),
            )
        )
    return out


def merge(
    held: Sequence[HistoryEvent], new: Iterable[HistoryEvent], limit: int = MAX_EVENTS
) -> list[HistoryEvent]:
    """The newest ``limit`` events of both, newest first, each event id once."""
    by_id = {e.event_id: e for e in held}
    for event in new:
        by_id.setdefault(event.event_id, event)
    return sorted(by_id.values(), key=lambda e: (e.at, e.event_id), reverse=True)[:limit]
