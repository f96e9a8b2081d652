"""Scheduled check-in (EventBridge schedule): the seed's Scheduler. Queues every
enrolled device whose last check-in is older than the compliance policy allows, so the
compliance reader blocks it (``lambdas.usecases.checkin``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lambdas.composition import Adapters
from lambdas.handlers.skeleton import LambdaFunction, ScheduledEvent, adapters
from lambdas.usecases.checkin import sweep_stale_checkins

function = LambdaFunction("scheduled_checkin", adapters)


@function.scheduled(done="check-in sweep done")
def handler(event: ScheduledEvent, a: Adapters, now: datetime) -> dict[str, Any]:
    report = sweep_stale_checkins(
        devices=a.devices, clusters=a.clusters, queue=a.compliance_queue, now=now
    )
    function.count("StaleDevices", report.stale)
    function.count("DevicesQueued", report.queued)
    function.count("ClustersSeeded", report.clusters_seeded)
    return {
        "stale": report.stale,
        "queued": report.queued,
        "clusters_seeded": report.clusters_seeded,
    }
