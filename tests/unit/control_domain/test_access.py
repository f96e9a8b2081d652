from __future__ import annotations

from datetime import timedelta

from lambdas.domain.access import (
    ManualOverride,
    OverrideAction,
    decide,
    owned_keys,
    split_key,
    to_entry,
)
from lambdas.domain.compliance import (
    CompliancePolicy,
    EnrollmentState,
    evaluate_compliance,
)
from seg_contract import Access, EntrySource, entry_key

from .conftest import NOW, device


def _override(action: OverrideAction, reason: str = "lost phone") -> ManualOverride:
    return ManualOverride("alice", "appl123", action, reason, "admin@corp", NOW)


def _decide(record=None, override=None, unknown=Access.BLOCK):  # type: ignore[no-untyped-def]
    result = evaluate_compliance(record, CompliancePolicy(), NOW) if record else None
    return decide(
        "alice",
        "appl123",
        device=record,
        compliance=result,
        override=override,
        unknown_device_action=unknown,
    )


def test_compliant_device_is_allowed_by_compliance() -> None:
    decision = _decide(device())
    assert (decision.access, decision.source, decision.reason) == (
        Access.ALLOW,
        EntrySource.COMPLIANCE,
        "compliant",
    )


def test_non_compliant_device_is_blocked_with_the_reasons() -> None:
    decision = _decide(device(compromised=True))
    assert decision.access is Access.BLOCK
    assert decision.source is EntrySource.COMPLIANCE
    assert "compromised" in decision.reason


def test_manual_block_wins_over_compliance() -> None:
    decision = _decide(device(), _override(OverrideAction.BLOCK))
    assert (decision.access, decision.source) == (Access.BLOCK, EntrySource.MANUAL)
    assert decision.reason == "manual block by admin@corp: lost phone"


def test_manual_allow_wins_over_non_compliance_and_unenrollment() -> None:
    for record in (
        device(compromised=True),
        device(enrollment_state=EnrollmentState.UNENROLLED),
    ):
        decision = _decide(record, _override(OverrideAction.ALLOW, ""))
        assert (decision.access, decision.source) == (Access.ALLOW, EntrySource.MANUAL)
        assert decision.reason == "manual allow by admin@corp"


def test_cleared_override_falls_back_to_compliance() -> None:
    decision = _decide(device(compromised=True), _override(OverrideAction.CLEAR))
    assert decision.source is EntrySource.COMPLIANCE
    assert decision.access is Access.BLOCK


def test_unenrolled_device_is_blocked_as_unenrolled() -> None:
    decision = _decide(device(enrollment_state=EnrollmentState.UNENROLLED))
    assert (decision.access, decision.source) == (Access.BLOCK, EntrySource.UNENROLLED)


def test_email_device_the_mdm_device_no_longer_reports_is_blocked() -> None:
    moved = device(
        eas_device_ids=("newid",), retired_keys=frozenset({entry_key("alice", "appl123")})
    )
    decision = _decide(moved)
    assert (decision.access, decision.source) == (Access.BLOCK, EntrySource.UNENROLLED)


def test_device_unknown_to_the_mdm_follows_the_cluster_setting() -> None:
    assert _decide(None, None, Access.ALLOW).access is Access.ALLOW
    assert _decide(None, None, Access.QUARANTINE).access is Access.QUARANTINE
    assert _decide(None, _override(OverrideAction.CLEAR), Access.BLOCK).access is Access.BLOCK


def test_device_unknown_to_the_mdm_still_gets_its_manual_entry() -> None:
    decision = _decide(None, _override(OverrideAction.ALLOW))
    assert (decision.access, decision.source) == (Access.ALLOW, EntrySource.MANUAL)


def test_one_key_per_eas_device_id() -> None:
    record = device(eas_device_ids=("a1", "b2"))
    assert owned_keys(record) == (entry_key("alice", "a1"), entry_key("alice", "b2"))
    assert split_key(entry_key("alice", "b2")) == ("alice", "b2")


def test_entry_carries_version_time_and_device_facts() -> None:
    record = device()
    entry = to_entry(_decide(record), version=7, now=NOW + timedelta(seconds=1), device=record)
    assert entry.version == 7
    assert entry.key == entry_key("alice", "appl123")
    assert (entry.mdm_device_id, entry.device_type, entry.model, entry.os) == (
        "mdm-1",
        "iPhone",
        "iPhone15,2",
        "17.1",
    )
    unknown = to_entry(_decide(None), version=8, now=NOW, device=None)
    assert unknown.mdm_device_id == ""
