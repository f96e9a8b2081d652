from __future__ import annotations

import pytest
from pydantic import ValidationError

from lambdas.domain.access import OverrideAction
from lambdas.domain.mdm_events import MDM_EVENT, CheckinEvent, EnrollmentEvent
from lambdas.domain.messages import (
    COMPLIANCE_MESSAGE,
    EvaluateDevice,
    ManualOverrideRequest,
    device_group,
    email_device_group,
    sqs_id,
)


def test_enrollment_normalises_identity_and_dedups_ids() -> None:
    event = MDM_EVENT.validate_python(
        {
            "type": "enrollment",
            "event_id": "e-1",
            "occurred_at": "2026-11-27T10:00:00+01:00",
            "mdm_device_id": "mdm-1",
            "user": "CORP\\Alice",
            "eas_device_ids": ["ApplABC", "applabc ", "Other"],
        }
    )
    assert isinstance(event, EnrollmentEvent)
    assert event.user == "alice"
    assert event.eas_device_ids == ("applabc", "other")
    assert event.occurred_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert event.occurred_at.hour == 9


@pytest.mark.parametrize(
    "body",
    [
        {
            "type": "checkin",
            "event_id": "e",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "m",
            "compromised": False,
            "encrypted": True,
        },  # no passcode
        {
            "type": "checkin",
            "event_id": "e",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "m",
            "compromised": False,
            "encrypted": True,
            "passcode": True,
            "jailbreak_score": 3,
        },  # unknown field
        {
            "type": "unenrollment",
            "event_id": "e",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "#email",
        },  # reserved prefix
        {
            "type": "enrollment",
            "event_id": "e",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "m",
            "user": "corp\\",
            "eas_device_ids": ["x"],
        },  # empty user
        {
            "type": "enrollment",
            "event_id": "e",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "m",
            "user": "bob",
            "eas_device_ids": [],
        },
        {
            "type": "wipe",
            "event_id": "e",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "m",
        },
        {
            "type": "unenrollment",
            "event_id": "has space",
            "occurred_at": "2026-11-27T10:00:00Z",
            "mdm_device_id": "m",
        },
    ],
)
def test_bad_mdm_events_are_rejected(body: dict) -> None:
    with pytest.raises(ValidationError):
        MDM_EVENT.validate_python(body)


def test_checkin_parses() -> None:
    event = MDM_EVENT.validate_json(
        '{"type":"checkin","event_id":"e2","occurred_at":"2026-11-27T10:00:00Z",'
        '"mdm_device_id":"m","compromised":true,"encrypted":true,"passcode":false,'
        '"os_version":"17.2"}'
    )
    assert isinstance(event, CheckinEvent)
    assert event.compromised and not event.passcode


def test_compliance_messages_round_trip_and_reject_unknown_fields() -> None:
    message = ManualOverrideRequest(
        user="Alice@corp.example",
        device_id="APPL1",
        action=OverrideAction.BLOCK,
        requested_at="2026-11-27T10:00:00Z",  # type: ignore[arg-type]
        request_id="r1",
    )
    assert (message.user, message.device_id) == ("alice", "appl1")
    assert COMPLIANCE_MESSAGE.validate_json(message.model_dump_json()) == message
    evaluate = EvaluateDevice(mdm_device_id="m", reason="checkin")
    assert COMPLIANCE_MESSAGE.validate_json(evaluate.model_dump_json()) == evaluate
    with pytest.raises(ValidationError):
        COMPLIANCE_MESSAGE.validate_json(
            '{"type":"evaluate_device","mdm_device_id":"m","reason":"x","extra":1}'
        )
    with pytest.raises(ValidationError):
        COMPLIANCE_MESSAGE.validate_json("not json")


def test_sqs_ids_are_valid_for_any_input() -> None:
    assert device_group("mdm-1") == "dev-mdm-1"
    hashed = device_group("dévice with spaces")
    assert hashed.startswith("dev-") and len(hashed) == 4 + 64
    assert email_device_group("alice", "x") != email_device_group("alice", "y")
    assert all(0x21 <= ord(c) < 0x7F for c in email_device_group("alice", "x"))
    assert len(sqs_id("p-", "x" * 500)) <= 128
