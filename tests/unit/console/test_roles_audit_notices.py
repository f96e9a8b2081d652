"""Roles from groups, audit records (secrets never kept, search across months, CSV that a
spreadsheet cannot run), and the notices' templates, plain reasons and change rules."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from lambdas.domain.audit import AuditEvent
from lambdas.domain.email_view import AccessObservation, email_device_key
from lambdas.domain.errors import InvalidInput
from lambdas.domain.notices import NoticeMarker, NoticeSettings
from lambdas.domain.roles import Role, parse_groups, parse_role, role_of_groups
from lambdas.ports import ObservationWrite
from lambdas.usecases import audit, notices

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


# --- roles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "role"),
    [
        ("[admin viewer]", Role.ADMIN),  # API Gateway flattens an array claim to a string
        ("viewer", Role.VIEWER),
        (["operator", "viewer"], Role.OPERATOR),
        ("[Operator]", Role.OPERATOR),
        ("[]", None),
        (None, None),
        ("[staff]", None),
    ],
)
def test_the_highest_console_group_is_the_role(claim: object, role: Role | None) -> None:
    assert role_of_groups(parse_groups(claim)) == role


def test_roles_include_the_ones_below() -> None:
    assert Role.ADMIN.may(Role.OPERATOR) and Role.OPERATOR.may(Role.VIEWER)
    assert not Role.VIEWER.may(Role.OPERATOR)
    assert parse_role(" Admin ") is Role.ADMIN
    with pytest.raises(ValueError, match="unknown role"):
        parse_role("root")


# --- audit ------------------------------------------------------------------------------


@dataclass
class MemoryLog:
    events: list[AuditEvent] = field(default_factory=list)
    reads: int = 0

    def append(self, event: AuditEvent) -> None:
        self.events.append(event)

    def read_month(
        self, month: str, *, before_seq: str | None, limit: int
    ) -> tuple[list[AuditEvent], bool]:
        self.reads += 1
        found = sorted(
            (
                e
                for e in self.events
                if e.month == month and (before_seq is None or e.seq < before_seq)
            ),
            key=lambda e: e.seq,
            reverse=True,
        )
        return found[:limit], len(found) > limit


def trail(log: MemoryLog, now: datetime, actor: str = "ann@example.com") -> audit.AuditTrail:
    return audit.AuditTrail(log=log, actor=actor, role=Role.ADMIN, now=now, reason="ticket 7")


def test_secrets_never_enter_a_record_only_facts_about_them() -> None:
    log = MemoryLog()
    trail(log, NOW).record(
        "substitution.device_password",
        "c-a/alice",
        after={"device_password": True, "upstream_password": "hunter2", "n": {"token": "x"}},
    )
    [event] = log.events
    assert event.after == {
        "device_password": True,
        "upstream_password": "[redacted]",
        "n": {"token": "[redacted]"},
    }
    assert (event.actor, event.role, event.reason) == ("ann@example.com", "admin", "ticket 7")
    with pytest.raises(ValueError, match="unknown audit action"):
        trail(log, NOW).record("device.explode", "x")


def test_search_pages_across_months_newest_first_with_filters() -> None:
    log = MemoryLog()
    for day in range(0, 80, 2):
        at = NOW - timedelta(days=day)
        action = "device.block" if day % 4 else "cluster.settings"
        trail(log, at, actor=f"u{day % 3}").record(action, f"alice/dev{day}")
    query = audit.AuditQuery(action="device.", limit=7)
    seen: list[AuditEvent] = []
    cursor = None
    while True:
        page, cursor = audit.search(
            log,
            audit.AuditQuery(action="device.", limit=7, cursor=cursor),
            now=NOW,
            retention_days=90,
        )
        seen += page
        if cursor is None:
            break
    assert [e.seq for e in seen] == sorted(
        (e.seq for e in log.events if e.action == "device.block"), reverse=True
    )
    assert query.limit == 7
    found, _ = audit.search(log, audit.AuditQuery(q="DEV10", limit=50), now=NOW, retention_days=90)
    assert [e.target for e in found] == ["alice/dev10"]
    old, _ = audit.search(
        log, audit.AuditQuery(limit=50, since=NOW - timedelta(days=5)), now=NOW, retention_days=90
    )
    assert {e.target for e in old} == {"alice/dev0", "alice/dev2", "alice/dev4"}
    with pytest.raises(InvalidInput, match="cursor"):
        audit.search(log, audit.AuditQuery(cursor="%%%"), now=NOW, retention_days=90)


def test_a_sparse_search_stops_after_its_share_and_says_where_to_go_on() -> None:
    log = MemoryLog()
    for minute in range(30):
        trail(log, NOW - timedelta(minutes=minute)).record("device.block", f"x/{minute}")
    page, cursor = audit.search(
        log,
        audit.AuditQuery(q="nothing matches", limit=5),
        now=NOW,
        retention_days=90,
        max_scanned=10,
    )
    assert page == [] and cursor is not None
    page, cursor = audit.search(
        log, audit.AuditQuery(q="x/29", limit=5, cursor=cursor), now=NOW, retention_days=90
    )
    assert [e.target for e in page] == ["x/29"] and cursor is None


def test_csv_cells_that_look_like_formulas_are_text() -> None:
    log = MemoryLog()
    trail(log, NOW, actor='=HYPERLINK("http://x")').record("device.note", "@evil")
    text = audit.to_csv(log.events)
    assert "'=HYPERLINK" in text and ",'@evil," in text
    assert text.splitlines()[0] == ",".join(audit.CSV_COLUMNS)


# --- notices ----------------------------------------------------------------------------


def test_templates_take_only_known_placeholders() -> None:
    NoticeSettings(subject="Hi $user, $$5 and ${state}")
    for bad in ("Hi $name", "Hi ${user", "$0"):
        with pytest.raises(ValidationError, match="placeholder"):
            NoticeSettings(subject=bad)
    with pytest.raises(ValidationError, match="mail_domain"):
        NoticeSettings(mail_domain="not a domain")
    assert NoticeSettings(mail_domain="@Example.COM").mail_domain == "example.com"


@pytest.mark.parametrize(
    ("rule", "reason", "words"),
    [
        (
            "entry",
            "non-compliant: no passcode; storage not encrypted",
            "security requirements: no passcode, storage not encrypted.",
        ),
        ("unknown_device", "not enrolled", "not enrolled in your organisation's device management"),
        ("override", "manual block by ann: lost", "IT administrators have blocked"),
        ("entry", "manual block by ann", "IT administrators have blocked"),
        ("rule:ios-16", "iOS 16 is quarantined", "not allowed to sync"),
        ("entry", "unenrolled from the MDM", "no longer enrolled"),
        ("fail_closed", "policy too old", "cannot confirm"),
        ("entry", "something else", "something else."),
    ],
)
def test_reasons_in_plain_words(rule: str, reason: str, words: str) -> None:
    assert words in notices.plain_reason(rule, reason)


def test_a_notice_names_the_device_why_and_what_to_do() -> None:
    settings = NoticeSettings(
        mail_domain="example.com", remediation={"c-a": "Install the Company Portal app."}
    )
    message = notices.NoticeMessage(
        email_device_key=email_device_key("bob", "dev1"),
        edge_id="e",
        user="bob",
        device_id="dev1",
        device_type="Pixel\r\nBcc: x@y",
        cluster_id="c-a",
        state="quarantine",
        rule="entry",
        reason="non-compliant: no passcode",
        observed_at="2026-11-27T03:00:00.000000Z",
    )
    subject, body = notices.render(message, settings)
    assert "\n" not in subject and "quarantined" in subject
    assert "Install the Company Portal app." in body
    assert "no passcode" in body and "2026-11-27 03:00 UTC" in body
    assert notices.address_of("bob", "example.com") == "bob@example.com"
    assert notices.address_of("bob", "") is None


@dataclass
class Markers:
    held: dict[str, NoticeMarker] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)

    def claim(self, marker: NoticeMarker) -> bool:
        old = self.held.get(marker.email_device_key)
        if old is None or (old.state != marker.state and old.observed_at < marker.observed_at):
            self.held[marker.email_device_key] = marker
            return True
        return old.edge_id == marker.edge_id and not old.outcome

    def release(self, key: str, observed_at: str) -> None:
        old = self.held.get(key)
        if old is not None and old.state != "allow" and old.observed_at < observed_at:
            self.held[key] = NoticeMarker(key, "allow", observed_at, old.edge_id, "sent")

    def send(self, body: str) -> None:
        self.queued.append(body)


def seen(state: str, minute: int, cluster: str = "c-a", enforced: bool = True) -> AccessObservation:
    return AccessObservation(
        email_device_key=email_device_key("bob", "dev1"),
        user="bob",
        device_id="dev1",
        device_type="Pixel",
        user_agent="",
        last_seen=f"2026-11-27T03:{minute:02d}:00.000000Z",
        event_id=f"e{minute}",
        last_command="Sync",
        access_state=state,
        reason=state,
        rule="entry",
        enforced=enforced,
        protocol_version="16.1",
        last_node="n",
        cluster_id=cluster,
    )


def test_one_notice_per_state_change_whatever_the_clusters_and_redeliveries() -> None:
    m = Markers()

    def step(write: ObservationWrite, o: AccessObservation) -> bool:
        return notices.observe(write, o, store=m, queue=m)  # type: ignore[arg-type]

    key = email_device_key("bob", "dev1")
    assert step(ObservationWrite(True, None), seen("block", 1))  # first seen blocked
    # A redelivery after a crash, before the sender sent it: queued again (the sender
    # lets one of the two through).
    assert step(ObservationWrite(False, "block", replayed=True), seen("block", 1))
    m.held[key] = replace(m.held[key], outcome="sent")  # the sender sent it
    assert not step(ObservationWrite(False, "block", replayed=True), seen("block", 1))
    assert not step(ObservationWrite(True, "allow"), seen("block", 2, cluster="c-b"))  # roams
    assert not step(ObservationWrite(True, "block"), seen("block", 3))  # still blocked
    assert step(ObservationWrite(True, "block"), seen("quarantine", 4))  # another state
    assert not step(ObservationWrite(True, "quarantine"), seen("allow", 5))  # fixed
    assert step(ObservationWrite(True, "allow"), seen("block", 6))  # blocked again
    assert not step(ObservationWrite(True, "allow"), seen("block", 7, enforced=False))  # test mode
    assert len(m.queued) == 4
