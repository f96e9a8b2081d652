"""The email-device view the dashboard reads, and how access events fold into it.

One row per (cluster, user, EAS DeviceId) a gateway has seen, holding the *newest*
request's facts. The row is owned by its observer: a batch only ever writes rows keyed
by the cluster whose credential sent it (``observation_key``), so the gateways of one
cluster cannot change what the console shows for devices another cluster saw. A device
that moves between sites has one row per cluster, each with its own last sync; the
console lists both and its device page shows them side by side.

Access events arrive at least once and in any order (gateways spool and resend, SQS
redelivers), so a row only moves forward: an event replaces the row when its time is
later, or equal with a greater event id (a total order, so two replicas of the reader
agree). Redelivering an event therefore changes nothing. An event's time is clamped to
when the API received its batch: a gateway whose clock runs ahead cannot stamp a row in
the future (where it would win over every newer real request until that time).

Activity counters (requests and blocks per minute) feed the dashboard's time series. A
folded event (``AccessEvent.count`` requests from ``first_at`` to ``at``, sent by a node
that could not deliver) counts all its requests, spread evenly over the minutes of its
span (the sum is exact; how they fell within the span is not known).
They are keyed by a fingerprint of the batch, so a redelivered or resent batch is counted
once (``dynamodb_email_devices`` bounds what that costs per minute).

Pure: values in, values out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from lambdas.domain.timefmt import format_instant, to_utc
from seg_contract import Access, AccessEvent, AccessEventBatch, entry_key
from seg_contract.decision_rules import DecisionRule
from seg_contract.identity import normalize_device_id, normalize_user

_UNKNOWN_SUFFIX = "~unknown"
# Between the cluster id and the entry key in an observation key: cluster ids are
# [a-z0-9-] and entry keys never hold it.
OBSERVER_SEPARATOR = "\x1e"


def tally(access_state: str, rule: str) -> str:
    """The counter a row counts under: its access state, marked when the cluster's
    unknown-device action decided it (the summary shows those apart)."""
    return access_state + (_UNKNOWN_SUFFIX if rule == DecisionRule.UNKNOWN_DEVICE else "")


def tally_state(name: str) -> tuple[str, bool]:
    """(access state, decided as unknown device) of a tally."""
    if name.endswith(_UNKNOWN_SUFFIX):
        return name[: -len(_UNKNOWN_SUFFIX)], True
    return name, False


def email_device_key(user: str, device_id: str) -> str:
    """The view's key: the contract's entry key of the normalised user and device id."""
    return entry_key(normalize_user(user), normalize_device_id(device_id))


def observation_key(cluster_id: str, email_device_key: str) -> str:
    """One cluster's row of an email device."""
    return f"{cluster_id}{OBSERVER_SEPARATOR}{email_device_key}"


def split_observation_key(key: str) -> tuple[str, str]:
    """(cluster id, entry key); a key written before rows had observers has no cluster."""
    cluster, sep, entry = key.partition(OBSERVER_SEPARATOR)
    return (cluster, entry) if sep else ("", key)


def minute_bucket(at: datetime) -> str:
    return format_instant(at)[:16]  # "YYYY-MM-DDTHH:MM"


# The text fields of an observation besides its key, in the order storage and the
# roster's journal keep them.
OBSERVATION_STRINGS = (
    "user",
    "device_id",
    "device_type",
    "user_agent",
    "last_seen",
    "event_id",
    "last_command",
    "access_state",
    "reason",
    "rule",
    "protocol_version",
    "last_node",
    "cluster_id",
)


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

    @property
    def observation_key(self) -> str:
        return observation_key(self.cluster_id, self.email_device_key)


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


def clamped(at: datetime, not_after: datetime | None) -> datetime:
    """An event's time, never later than when its batch was received."""
    at = to_utc(at)
    return min(at, to_utc(not_after)) if not_after is not None else at


def observation(
    event: AccessEvent, cluster_id: str, not_after: datetime | None = None
) -> AccessObservation | None:
    """The view row an event implies, or None for requests that name no device
    (OPTIONS, anonymous probes): they count as activity but have no row. ``not_after``
    (the batch's receipt) caps the event's time."""
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
        last_seen=format_instant(clamped(event.at, not_after)),
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
    Event times are clamped to ``received_at``."""
    not_after = received_at
    newest: dict[str, AccessObservation] = {}
    for event in events:
        obs = observation(event, cluster_id, not_after)
        if obs is None:
            continue
        held = newest.get(obs.email_device_key)
        if held is None or obs.newer_than(held):
            newest[obs.email_device_key] = obs
    return sorted(newest.values(), key=lambda o: o.email_device_key)


def spread(count: int, first: datetime, last: datetime) -> list[tuple[str, int]]:
    """``count`` requests from ``first`` to ``last`` as (minute, requests), evenly over
    the minutes of the span (the earlier minutes take the remainder), summing to
    ``count``."""
    start = to_utc(first).replace(second=0, microsecond=0)
    end = to_utc(last).replace(second=0, microsecond=0)
    if start >= end:
        return [(minute_bucket(last), count)]
    minutes = min(int((end - start).total_seconds()) // 60 + 1, count)
    step = (end - start) / max(1, minutes - 1)
    base, extra = divmod(count, minutes)
    out: dict[str, int] = {}
    for n in range(minutes):
        at = end if n == minutes - 1 else start + step * n
        key = minute_bucket(at)
        out[key] = out.get(key, 0) + base + (1 if n < extra else 0)
    return sorted(out.items())


def activity(
    events: Iterable[AccessEvent], received_at: datetime | None = None
) -> list[ActivityCount]:
    """Requests and blocks per minute (event times clamped to ``received_at``). A block
    is a request the gateway refused, or (in test mode) would have refused. A folded
    event counts ``count`` requests over its span (``spread``)."""
    counts: dict[str, list[int]] = {}
    for event in events:
        last = clamped(event.at, received_at)
        if event.count == 1 or event.first_at is None:
            parts = [(minute_bucket(last), event.count)]
        else:
            parts = spread(event.count, min(clamped(event.first_at, received_at), last), last)
        for minute, n in parts:
            bucket = counts.setdefault(minute, [0, 0])
            bucket[0] += n
            if event.decision is not Access.ALLOW:
                bucket[1] += n
    return [ActivityCount(m, r, b) for m, (r, b) in sorted(counts.items())]


def nodes_seen(
    batch: AccessEventBatch, cluster_id: str, received_at: datetime | None = None
) -> list[NodeSeen]:
    latest: dict[str, str] = {}
    for event in batch.events:
        at = format_instant(clamped(event.at, received_at))
        if at > latest.get(event.node_id, ""):
            latest[event.node_id] = at
    return [NodeSeen(cluster_id, node, at) for node, at in sorted(latest.items())]


def batch_fingerprint(batch: AccessEventBatch) -> str:
    """Stable id of a batch's content: a resent or redelivered batch has the same one.
    64 bits: a collision within one minute's batches is vanishingly unlikely, and each
    costs 16 bytes in that minute's counter."""
    digest = hashlib.sha256()
    for event_id in sorted(e.event_id for e in batch.events):
        digest.update(event_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]
