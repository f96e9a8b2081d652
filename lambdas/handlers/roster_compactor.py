"""Roster compactor (scheduled, one at a time): folds the roster journal into a new
snapshot that warm API functions load (``lambdas.usecases.roster.compact``). An event
with ``"rebuild": true`` (a run started by hand) rebuilds the snapshot from the view."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lambdas.composition import Adapters
from lambdas.handlers.skeleton import LambdaFunction, ScheduledEvent, adapters
from lambdas.usecases.roster import compact

# The adapters hold no state but their clients: each run reads the tables afresh.
function = LambdaFunction("roster_compactor", adapters)


@function.scheduled(done="roster compacted")
def handler(event: ScheduledEvent, a: Adapters, now: datetime) -> dict[str, Any]:
    result = compact(
        snapshots=a.roster, journal=a.roster, view=a.email_devices, force_rebuild=event.rebuild
    )
    function.count("RosterRows", result.head.rows)
    function.count("RosterJournalEntries", result.replayed)
    return {
        "rows": result.head.rows,
        "chunks": result.head.chunks,
        "rebuilt": result.rebuilt,
        "journal_entries": result.replayed,
        "watermark": result.head.watermark,
    }
