"""The email-device view the dashboard reads, and how access events fold into it.

One row per (user, EAS DeviceId) a gateway has seen, holding the *newest* request's facts.
Access events arrive at least once and in any order (gateways spool and resend, SQS
redelivers), so a row only moves forward: an event replaces the row when its time is
later, or equal with a greater event id (a total order, so two replicas of the reader
agree). Redelivering an event therefore changes nothing.

Activity counters (requests and blocks per minute) feed the dashboard's time series.
They are keyed by a fingerprint of the batch, so a redelivered or resent batch is counted
once.

Device counters: every row carries its *tally* (access state, plus whether the cluster's
unknown-device rule decided it), and the view keeps one count per tally, moved in the
same transaction as the row whenever a row appears or changes tally. The dashboard's
totals and summary counts read those counters instead of every row.

Pure: values in, values out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.timefmt import format_instant, to_utc
from seg_contract import Access, AccessEvent, AccessEventBatch, entry_key
from seg_contract.identity import normalize_device_id, normalize_user

RULE_UNKNOWN = "unknown_device"  # onprem_gateway.core.decision.RULE_UNKNOWN
_UNKNOWN_SUFFIX = "~unknown"


def tally(access_state: str, rule: str) -> str:
    """The counter a row counts under: its access state, marked when the cluster's
    unknown-device action decided it (the summary shows those apart)."""
    return access_state + (_UNKNOWN_SUFFIX if rule == RULE_UNKNOWN else "")


def tally_state(name: str) -> tuple[str, bool]:
    """(access state, decided as unknown device) of a tally."""
    if name.endswith(_UNKNOWN_SUFFIX):
        return name[: -len(_UNKNOWN_SUFFIX)], True
    return name, False


def email_device_key(user: str, device_id: str) -> str:
    """The view's key: the contract's entry key of the normalised user and device id."""
    return entry_key(normalize_user(user), normalize_device_id(device_id))


def minute_bucket(at: datetime) -> str:
    return format_instant(at)[:16]  # "YYYY-MM-DDTHH:MM"


@dataclass(frozen=True)
class AccessObservation:
    """The newest facts about one email device, from one access event."""

    email_device_key: str
    user: str
    device_id: str
    device_type: str
    user_agent: str
    last_seen: str  # format_instant()
    event_id: str
    last_command: str
    access_state: str
    reason: str
    rule: str
    enforced: bool
    protocol_version: str
    last_node: str
    cluster_id: str

    def newer_than(self, other: AccessObservation) -> bool:
        return (self.last_seen, self.event_id) > (other.last_seen, other.event_id)


@dataclass(frozen=True)
class ActivityCount:
    """Requests and blocks seen in one minute, from one batch."""

    minute: str
    requests: int
    blocks: int


@dataclass(frozen=True)
class NodeSeen:
    cluster_id: str
    node_id: str
    last_seen: str  # format_instant()


# A gateway's clock may run ahead; a row stamped in the future would refuse every real
# update until that time, so event times are capped at intake time plus this skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def observation(
    event: AccessEvent, cluster_id: str, not_after: datetime | None = None
) -> AccessObservation | None:
    """The view row an event implies, or None for requests that name no device
    (OPTIONS, anonymous probes): they count as activity but have no row. ``not_after``
    caps the event's time (see ``MAX_CLOCK_SKEW``)."""
    user = normalize_user(event.user)
    device_id = normalize_device_id(event.device_id)
    if not user or not device_id:
        return None
    return AccessObservation(
        email_device_key=entry_key(user, device_id),
        user=user,
        device_id=device_id,
        device_type=event.device_type,
        user_agent=event.user_agent,
        last_seen=format_instant(
            min(to_utc(event.at), not_after) if not_after is not None else event.at
        ),
        event_id=event.event_id,
        last_command=event.command,
        access_state=event.decision.value,
        reason=event.reason,
        rule=event.rule,
        enforced=event.enforced,
        protocol_version=event.protocol_version,
        last_node=event.node_id,
        cluster_id=cluster_id,
    )


def newest_per_device(
    events: Iterable[AccessEvent], cluster_id: str, received_at: datetime | None = None
) -> list[AccessObservation]:
    """One observation per device: the newest in the batch (fewer conditional writes).
    Event times are capped at ``received_at + MAX_CLOCK_SKEW``."""
    not_after = to_utc(received_at) + MAX_CLOCK_SKEW if received_at is not None else None
    newest: dict[str, AccessObservation] = {}
    for event in events:
        obs = observation(event, cluster_id, not_after)
        if obs is None:
            continue
        held = newest.get(obs.email_device_key)
        if held is None or obs.newer_than(held):
            newest[obs.email_device_key] = obs
    return sorted(newest.values(), key=lambda o: o.email_device_key)


def activity(events: Iterable[AccessEvent]) -> list[ActivityCount]:
    """Requests and blocks per minute. A block is a request the gateway refused, or (in
    test mode) would have refused."""
    counts: dict[str, list[int]] = {}
    for event in events:
        bucket = counts.setdefault(minute_bucket(event.at), [0, 0])
        bucket[0] += 1
        if event.decision is not Access.ALLOW:
            bucket[1] += 1
    return [ActivityCount(m, r, b) for m, (r, b) in sorted(counts.items())]


def nodes_seen(batch: AccessEventBatch, cluster_id: str) -> list[NodeSeen]:
    latest: dict[str, str] = {}
    for event in batch.events:
        at = format_instant(event.at)
        if at > latest.get(event.node_id, ""):
            latest[event.node_id] = at
    return [NodeSeen(cluster_id, node, at) for node, at in sorted(latest.items())]


def batch_fingerprint(batch: AccessEventBatch) -> str:
    """Stable id of a batch's content: a resent or redelivered batch has the same one."""
    digest = hashlib.sha256()
    for event_id in sorted(e.event_id for e in batch.events):
        digest.update(event_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]
