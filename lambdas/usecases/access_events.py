"""Access events from gateways: accepted by the API onto the payload queue (the seed's
AWMegPayload), applied to the dashboard's view by the payload reader.

Intake never writes the view synchronously: the API answers 202 once the batch is
queued, so a burst of gateway traffic costs the API one SQS call per batch and the
reader absorbs it at its own pace.

What the reader does with one batch, in this order (each step safe to repeat):
1. journal the batch's newest observation per device for the console's roster
   (``roster``; before the rows, so a crash in between loses nothing);
2. write each device's row of the sending cluster (newest wins) and act on its state
   change: a device that became blocked or quarantined gets a notice queued
   (``notices``);
3. merge the events into each device's bounded recent history (``history``);
4. count the batch's requests and blocks per minute, once per batch;
5. move its nodes' last_seen forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from lambdas.domain import access_history, email_view
from lambdas.domain.errors import InvalidInput
from lambdas.domain.timefmt import format_instant, parse_instant
from lambdas.ports import (
    AccessHistoryStore,
    EmailDeviceView,
    GatewayNodeStore,
    NoticeQueue,
    NoticeStore,
    PayloadQueue,
    RosterJournal,
)
from lambdas.usecases import notices
from lambdas.usecases.roster import journal_observations
from seg_contract import AccessEventBatch

# SQS's message size limit is 256 KiB; keep a margin for the envelope's attributes.
MAX_MESSAGE_BYTES = 250_000


def _instant(value: str) -> str:
    parse_instant(value)  # ValueError (a validation error) unless format_instant()'s form
    return value


class PayloadMessage(BaseModel):
    """One payload-queue message: a batch tagged with the cluster that sent it (taken
    from the authenticated credential, never from the body)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_id: str
    received_at: Annotated[str, AfterValidator(_instant)]  # format_instant()
    batch: AccessEventBatch


def _split(message: PayloadMessage, limit: int) -> list[str]:
    body = message.model_dump_json()
    if len(body.encode()) <= limit:
        return [body]
    events = message.batch.events
    if len(events) == 1:
        raise InvalidInput("one access event is larger than the payload queue accepts")
    half = len(events) // 2
    parts: list[str] = []
    for chunk in (events[:half], events[half:]):
        batch = message.batch.model_copy(update={"events": chunk})
        parts += _split(message.model_copy(update={"batch": batch}), limit)
    return parts


def accept_access_events(
    batch: AccessEventBatch,
    cluster_id: str,
    queue: PayloadQueue,
    now: datetime,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> int:
    """Queue a gateway's batch for the payload reader; return how many requests it
    stands for (a folded event counts its ``count``)."""
    message = PayloadMessage(cluster_id=cluster_id, received_at=format_instant(now), batch=batch)
    queue.send(_split(message, max_message_bytes))
    return sum(e.count for e in batch.events)


@dataclass(frozen=True)
class PayloadStores:
    view: EmailDeviceView
    nodes: GatewayNodeStore
    journal: RosterJournal
    history: AccessHistoryStore
    notices: NoticeStore
    notice_queue: NoticeQueue


@dataclass(frozen=True)
class PayloadOutcome:
    rows_written: int
    notices_queued: int


def apply_payload(message: PayloadMessage, stores: PayloadStores) -> PayloadOutcome:
    """Fold one queued batch in (see the module docstring). Safe to run twice."""
    received_at = parse_instant(message.received_at)
    events = message.batch.events
    observations = email_view.newest_per_device(events, message.cluster_id, received_at)
    journal_observations(stores.journal, observations)
    written = queued = 0
    for observation in observations:
        result = stores.view.apply_observation(observation)
        written += result.written
        queued += notices.observe(
            result, observation, store=stores.notices, queue=stores.notice_queue
        )
    for key, recent in access_history.per_device(events, message.cluster_id, received_at).items():
        stores.history.add(key, recent, received_at)
    fingerprint = email_view.batch_fingerprint(message.batch)
    for count in email_view.activity(events, received_at):
        stores.view.add_activity(count, fingerprint)
    for seen in email_view.nodes_seen(message.batch, message.cluster_id, received_at):
        stores.nodes.record_seen(seen)
    return PayloadOutcome(rows_written=written, notices_queued=queued)
