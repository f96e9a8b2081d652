"""Notices to users: when a device becomes blocked or quarantined, its user gets one
e-mail saying so, why (in plain words) and what to do (the cluster's remediation text).

Where the change is seen: in the payload reader, when a gateway's newest decision for a
device differs from the row's previous one (``EmailDeviceView.apply_observation`` returns
the row it replaced). That is where a block becomes real for the user: it is what the
phone was answered, whatever decided it (compliance, an override, the unknown-device
action, a cluster rule, failing closed), and it needs nothing from the compliance reader.
A device first seen blocked (say, an unenrolled phone) counts as a change too.

At most one notice per device per state change: a marker per email device
(``NoticeStore.claim``) records the state notified; a change to a state the marker holds
already (the same change seen by a second cluster, or a redelivered batch) sends nothing,
and an allowed request seen later (``release``) lets the next block notify again. Two
clusters that disagree steadily (one allows, one blocks) do not flap: only a row's own
transitions move the marker. The sender (a queue consumer, so a burst of blocks drains at
SES's pace) records each notice as sent on the marker and skips a message whose change
is already sent or superseded; only a crash between SES accepting the mail and that
record can repeat one.

Requests in test (monitor-only) mode were not refused, so they notify nobody.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from lambdas.domain.email_view import AccessObservation
from lambdas.domain.notices import NoticeMarker, NoticeSettings
from lambdas.domain.timefmt import format_instant
from lambdas.ports import Mailer, NoticeQueue, NoticeStore, ObservationWrite
from seg_contract.decision_rules import DecisionRule, is_cluster_rule

logger = logging.getLogger(__name__)

NOTIFIED_STATES = ("block", "quarantine")
STATE_WORDS = {"block": "blocked", "quarantine": "quarantined"}


class NoticeMessage(BaseModel):
    """One notice to send (the notices queue)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email_device_key: str
    edge_id: str
    user: str
    device_id: str
    device_type: str
    cluster_id: str
    state: Literal["block", "quarantine"]
    rule: str
    reason: str
    observed_at: str


# --- the payload reader's side ---------------------------------------------------------


def observe(
    write: ObservationWrite, obs: AccessObservation, *, store: NoticeStore, queue: NoticeQueue
) -> bool:
    """Act on one written observation; True when a notice was queued."""
    if not (write.written or write.replayed):
        return False
    if write.written and write.previous_state == obs.access_state:
        return False  # no change of this row's state
    if obs.access_state == "allow":
        if write.written:
            store.release(obs.email_device_key, obs.last_seen)
        return False
    if obs.access_state not in NOTIFIED_STATES or not obs.enforced:
        return False
    edge = f"{obs.observation_key}@{obs.event_id}"
    marker = NoticeMarker(obs.email_device_key, obs.access_state, obs.last_seen, edge)
    if not store.claim(marker):
        return False
    message = NoticeMessage(
        email_device_key=obs.email_device_key,
        edge_id=edge,
        user=obs.user,
        device_id=obs.device_id,
        device_type=obs.device_type,
        cluster_id=obs.cluster_id,
        state=obs.access_state,  # type: ignore[arg-type]  # checked above
        rule=obs.rule,
        reason=obs.reason,
        observed_at=obs.last_seen,
    )
    queue.send(message.model_dump_json())
    return True


# --- the sender's side -----------------------------------------------------------------


_RULE_WORDS: dict[str, str] = {
    DecisionRule.UNKNOWN_DEVICE: (
        "This device is not enrolled in your organisation's device management."
    ),
    DecisionRule.USER_BLOCK: "Your account may not sync company mail on mobile devices.",
    DecisionRule.FAIL_CLOSED: (
        "The mail gateway cannot confirm right now that this device is allowed."
    ),
    DecisionRule.NO_POLICY: (
        "The mail gateway cannot confirm right now that this device is allowed."
    ),
    DecisionRule.OVERRIDE: "Your IT administrators have blocked this device.",
}
_REASON_WORDS = (
    ("manual ", "Your IT administrators have blocked this device."),
    ("unenrolled", "This device is no longer enrolled in your organisation's device management."),
    (
        "no longer enrolled",
        "This device is no longer enrolled in your organisation's device management.",
    ),
)


def plain_reason(rule: str, reason: str) -> str:
    """Why, in words a phone's owner understands (the gateway's reasons are for admins)."""
    if rule in _RULE_WORDS:
        return _RULE_WORDS[rule]
    if is_cluster_rule(rule):
        return (
            "This kind of device, its operating system or its mail app is not allowed "
            "to sync company mail."
        )
    if reason.startswith("non-compliant: "):
        problems = reason.removeprefix("non-compliant: ").replace(";", ",")
        return f"This device does not meet your organisation's security requirements: {problems}."
    words = next((w for prefix, w in _REASON_WORDS if reason.startswith(prefix)), None)
    return words or (
        reason.rstrip(".") + "." if reason else "Your organisation's policy refuses it."
    )


def address_of(user: str, mail_domain: str) -> str | None:
    if "@" in user:
        return user
    return f"{user}@{mail_domain}" if mail_domain and user else None


def render(message: NoticeMessage, settings: NoticeSettings) -> tuple[str, str]:
    """(subject, body) of the notice."""
    values = {
        "user": message.user,
        "device_id": message.device_id,
        "device_type": message.device_type or "device",
        "state": STATE_WORDS[message.state],
        "reason": plain_reason(message.rule, message.reason),
        "remediation": settings.remediation_for(message.cluster_id),
        "time": message.observed_at[:16].replace("T", " ") + " UTC",
    }
    subject = string.Template(settings.subject).safe_substitute(values)
    body = string.Template(settings.body).safe_substitute(values)
    # A header must be one line, whatever a device type holds.
    return " ".join(subject.split())[:200], body


@dataclass(frozen=True)
class SendResult:
    outcome: str  # "sent" | "skipped: ..." | "duplicate" | "superseded"
    to: str = ""
    message_id: str = ""


def send_notice(
    message: NoticeMessage,
    *,
    store: NoticeStore,
    mailer: Mailer | None,
    sender: str,
    now: datetime,
) -> SendResult:
    """Send (at most once) the notice of one change. SES failing puts the change back,
    so the queue's retry sends it; a crash while SES has it loses it rather than
    repeat it."""
    marker = store.marker(message.email_device_key)
    if marker is None or marker.edge_id != message.edge_id or marker.state != message.state:
        return SendResult("superseded")
    if marker.outcome:
        return SendResult("duplicate")
    at = format_instant(now)
    settings = store.settings()
    to = address_of(message.user, settings.mail_domain)
    skipped = ""
    if not settings.enabled:
        skipped = "skipped: notices are turned off"
    elif not sender or mailer is None:
        skipped = "skipped: no sender address is configured"
    elif to is None:
        skipped = "skipped: no e-mail address (set mail_domain for bare user names)"
    key, edge = message.email_device_key, message.edge_id
    if skipped or to is None:
        store.set_outcome(key, edge, expect="", outcome=skipped, at=at)
        logger.info("notice of %s (%s) %s", _shown(key), message.state, skipped)
        return SendResult(skipped)
    if not store.set_outcome(key, edge, expect="", outcome="sending", at=at):
        return SendResult("duplicate")
    subject, body = render(message, settings)
    try:
        assert mailer is not None
        message_id = mailer.send(sender=sender, to=to, subject=subject, body=body)
    except Exception:
        store.set_outcome(key, edge, expect="sending", outcome="", at=at)
        raise
    store.set_outcome(key, edge, expect="sending", outcome="sent", at=at)
    logger.info("notice of %s (%s) sent", _shown(key), message.state)
    return SendResult("sent", to=to, message_id=message_id)


def _shown(email_device_key: str) -> str:
    return email_device_key.replace("\x1f", "/")
