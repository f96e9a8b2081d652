"""Access events from gateways: accepted by the API onto the payload queue (the seed's
AWMegPayload), applied to the dashboard's view by the payload reader.

Intake never writes the view synchronously: the API answers 202 once the batch is
queued, so a burst of gateway traffic costs the API one SQS call per batch and the
reader absorbs it at its own pace.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from lambdas.domain.timefmt import format_instant, parse_instant
from lambdas.ports import EmailDeviceView, GatewayNodeStore, PayloadQueue
from lambdas.usecases import email_view
from lambdas.usecases.errors import InvalidInput
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
    """Queue a gateway's batch for the payload reader; return how many events."""
    message = PayloadMessage(cluster_id=cluster_id, received_at=format_instant(now), batch=batch)
    queue.send(_split(message, max_message_bytes))
    return len(batch.events)


def apply_payload(message: PayloadMessage, view: EmailDeviceView, nodes: GatewayNodeStore) -> int:
    """Fold one queued batch into the view (newest wins per device), count its activity
    once, and move its nodes' last_seen forward. Safe to run twice. Returns the number of
    rows written."""
    written = 0
    received_at = parse_instant(message.received_at)
    for observation in email_view.newest_per_device(
        message.batch.events, message.cluster_id, received_at
    ):
        written += view.apply_observation(observation)
    fingerprint = email_view.batch_fingerprint(message.batch)
    for count in email_view.activity(message.batch.events):
        view.add_activity(count, fingerprint)
    for seen in email_view.nodes_seen(message.batch, message.cluster_id):
        nodes.record_seen(seen)
    return written
