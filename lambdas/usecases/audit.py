"""The audit trail: every console action as an append-only record of who did what, when,
to what, what it was before and after, and why.

Records are written by the API when it accepts an action (a block is recorded when the
API queues it; the gateways apply it moments later). They are kept for the deployment's
``log_retention_days`` and never changed or deleted by the application (the API's IAM
role may only add them). Values that are secrets never enter a record: callers describe
a password change as a fact ("set", "issued") and ``scrub`` replaces anything under a
secret-looking name that slipped through.

Search reads month partitions newest first and filters them; one request reads at most
``MAX_SCANNED`` records, so a rare match far back answers with the records found so far
and a cursor to go on from.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lambdas.domain.audit import AuditEvent
from lambdas.domain.cursors import NOT_ISSUED, decode_cursor, encode_cursor
from lambdas.domain.errors import InvalidInput
from lambdas.domain.roles import Role
from lambdas.domain.timefmt import format_instant, parse_instant, to_utc
from lambdas.ports import AuditLog

MAX_LIMIT = 500
MAX_SCANNED = 5_000  # records read per search request
MAX_EXPORT = 10_000  # records per export request
MAX_REASON = 512
_SECRET_WORDS = ("password", "secret", "credential", "token", "private")

# Every action the console records, as its ``action`` field says it.
ACTIONS = (
    "device.block",
    "device.allow",
    "device.clear",
    "device.note",
    "cluster.create",
    "cluster.settings",
    "cluster.public_key",
    "cluster.credential.rotate",
    "cluster.credential.revoke",
    "substitution.upstream_password",
    "substitution.device_password",
    "substitution.device_password_revoked",
    "substitution.unbound_passwords_removed",
    "substitution.remove",
    "compliance_policy.update",
    "notices.update",
    "signing_key.register",
    "signing_key.activate",
    "signing_key.retire",
)


def scrub(value: Any) -> Any:
    """``value`` with every entry under a secret-looking key replaced, unless it is a
    plain fact about the secret (a flag or a count)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            secretish = any(word in str(key).casefold() for word in _SECRET_WORDS)
            if secretish and not isinstance(inner, bool | int | type(None)):
                out[str(key)] = "[redacted]"
            else:
                out[str(key)] = scrub(inner)
        return out
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def new_event(
    *,
    actor: str,
    role: Role,
    action: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    reason: str,
    now: datetime,
) -> AuditEvent:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")  # a programming error
    at = format_instant(now)
    return AuditEvent(
        seq=f"{at}#{secrets.token_hex(4)}",
        at=at,
        actor=actor,
        role=role.label,
        action=action,
        target=target,
        before=scrub(before) if before is not None else None,
        after=scrub(after) if after is not None else None,
        reason=reason.strip()[:MAX_REASON],
    )


@dataclass
class AuditTrail:
    """What a route records through: the caller, the log, the clock and the reason the
    caller gave (``X-SEG-Reason``), bound once per request."""

    log: AuditLog
    actor: str
    role: Role
    now: datetime
    reason: str = ""

    def record(
        self,
        action: str,
        target: str,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> AuditEvent:
        event = new_event(
            actor=self.actor,
            role=self.role,
            action=action,
            target=target,
            before=before,
            after=after,
            reason=self.reason if reason is None else reason,
            now=self.now,
        )
        self.log.append(event)
        return event


# --- search --------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("device.")
    target: str | None = None  # substring
    q: str | None = None  # substring of actor, action, target, reason or the values
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def _months(newest: datetime, oldest: datetime) -> list[str]:
    months: list[str] = []
    year, month = newest.year, newest.month
    while (year, month) >= (oldest.year, oldest.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def _cursor_seq(cursor: str) -> str:
    """The ``seq`` of the last record a search answered before (its cursor's position)."""
    seq = decode_cursor(cursor, str)
    try:
        parse_instant(seq.partition("#")[0])
    except ValueError as exc:
        raise InvalidInput(NOT_ISSUED) from exc
    return seq


def _matches(event: AuditEvent, query: AuditQuery) -> bool:
    if query.actor and query.actor.casefold() != event.actor.casefold():
        return False
    if query.action:
        wanted = query.action
        if wanted.endswith("."):
            if not event.action.startswith(wanted):
                return False
        elif event.action != wanted:
            return False
    if query.target and query.target.casefold() not in event.target.casefold():
        return False
    if query.q:
        text = " ".join(
            (
                event.actor,
                event.action,
                event.target,
                event.reason,
                json.dumps(event.before or {}),
                json.dumps(event.after or {}),
            )
        )
        if query.q.casefold() not in text.casefold():
            return False
    return True


def search(
    log: AuditLog,
    query: AuditQuery,
    *,
    now: datetime,
    retention_days: int,
    max_scanned: int = MAX_SCANNED,
    max_limit: int = MAX_LIMIT,
) -> tuple[list[AuditEvent], str | None]:
    """Matching records newest first, and a cursor when more may follow."""
    if not 1 <= query.limit <= max_limit:
        raise InvalidInput(f"limit must be between 1 and {max_limit}")
    oldest = to_utc(now) - timedelta(days=retention_days)
    since = max(to_utc(query.since), oldest) if query.since else oldest
    until = min(to_utc(query.until), to_utc(now)) if query.until else to_utc(now)
    if since > until:
        raise InvalidInput("since must be before until")
    before_seq = _cursor_seq(query.cursor) if query.cursor else None
    upper = format_instant(until) + "~"  # "~" sorts after "#<random>"
    if before_seq is None or before_seq > upper:
        before_seq = upper
    lower = format_instant(since)
    found: list[AuditEvent] = []
    scanned = 0
    last_seen: str | None = None
    for month in _months(parse_instant(before_seq[:27]), since):
        page_start = before_seq if month == before_seq[:7] else None
        while True:
            events, more = log.read_month(month, before_seq=page_start, limit=100)
            for event in events:
                if event.seq < lower:
                    return found, None
                scanned += 1
                last_seen = event.seq
                if _matches(event, query):
                    found.append(event)
                    if len(found) > query.limit:
                        found.pop()
                        return found, encode_cursor(found[-1].seq)
                if scanned >= max_scanned:
                    return found, encode_cursor(last_seen)
            if not more or not events:
                break
            page_start = events[-1].seq
    return found, None


# --- export --------------------------------------------------------------------------

CSV_COLUMNS = ("at", "actor", "role", "action", "target", "before", "after", "reason")


def safe_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts like a formula gets a
    leading apostrophe (OWASP's advice against CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(events: list[AuditEvent], *, header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for e in events:
        writer.writerow(
            [
                safe_cell(v)
                for v in (
                    e.at,
                    e.actor,
                    e.role,
                    e.action,
                    e.target,
                    json.dumps(e.before, sort_keys=True) if e.before is not None else "",
                    json.dumps(e.after, sort_keys=True) if e.after is not None else "",
                    e.reason,
                )
            ]
        )
    return out.getvalue()
