from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lambdas.domain.compliance import (
    CompliancePolicy,
    ComplianceState,
    EnrollmentState,
    Reason,
    evaluate_compliance,
    stale_cutoff,
)

from .conftest import NOW, device

DEFAULT = CompliancePolicy()


def test_healthy_recent_device_is_compliant() -> None:
    result = evaluate_compliance(device(), DEFAULT, NOW)
    assert result.state is ComplianceState.COMPLIANT
    assert result.reasons == ()
    assert result.describe() == "compliant"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"compromised": True}, Reason.COMPROMISED),
        ({"encrypted": False}, Reason.NOT_ENCRYPTED),
        ({"passcode": False}, Reason.NO_PASSCODE),
        ({"managed": False}, Reason.NOT_MANAGED),
        ({"last_checkin_at": NOW - timedelta(hours=25)}, Reason.CHECKIN_STALE),
        ({"enrollment_state": EnrollmentState.UNENROLLED}, Reason.UNENROLLED),
    ],
)
def test_each_default_rule_makes_a_device_non_compliant(changes: dict, reason: Reason) -> None:
    result = evaluate_compliance(device(**changes), DEFAULT, NOW)
    assert result.state is ComplianceState.NON_COMPLIANT
    assert result.reasons == (reason,)


def test_every_failing_rule_is_listed_in_a_fixed_order() -> None:
    result = evaluate_compliance(
        device(compromised=True, encrypted=False, passcode=False), DEFAULT, NOW
    )
    assert result.reasons == (Reason.COMPROMISED, Reason.NOT_ENCRYPTED, Reason.NO_PASSCODE)
    assert result.describe() == (
        "non-compliant: compromised (jailbroken or rooted); storage not encrypted; no passcode"
    )


def test_unreported_posture_does_not_fail_a_freshly_enrolled_device() -> None:
    fresh = device(
        last_checkin_at=None,
        compromised=None,
        encrypted=None,
        passcode=None,
        enrolled_at=NOW - timedelta(minutes=5),
    )
    assert evaluate_compliance(fresh, DEFAULT, NOW).compliant


def test_check_in_age_counts_from_enrollment_until_the_first_check_in() -> None:
    silent = device(last_checkin_at=None, enrolled_at=NOW - timedelta(hours=24, seconds=1))
    assert evaluate_compliance(silent, DEFAULT, NOW).reasons == (Reason.CHECKIN_STALE,)


def test_check_in_exactly_at_the_limit_is_still_fresh() -> None:
    edge = device(last_checkin_at=NOW - timedelta(seconds=DEFAULT.max_checkin_age_s))
    assert evaluate_compliance(edge, DEFAULT, NOW).compliant
    assert stale_cutoff(DEFAULT, NOW) == NOW - timedelta(days=1)


def test_rules_can_be_switched_off() -> None:
    lenient = CompliancePolicy(
        block_compromised=False,
        require_encryption=False,
        require_passcode=False,
        require_managed=False,
        max_checkin_age_s=7 * 86_400,
    )
    risky = device(
        compromised=True,
        encrypted=False,
        passcode=False,
        managed=False,
        last_checkin_at=NOW - timedelta(days=6),
    )
    assert evaluate_compliance(risky, lenient, NOW).compliant


def test_unenrolled_device_is_not_also_reported_stale() -> None:
    gone = device(
        enrollment_state=EnrollmentState.UNENROLLED, last_checkin_at=NOW - timedelta(days=9)
    )
    assert evaluate_compliance(gone, DEFAULT, NOW).reasons == (Reason.UNENROLLED,)


@pytest.mark.parametrize("bad", [{"max_checkin_age_s": 10}, {"unknown_rule": True}])
def test_policy_rejects_bad_values_and_unknown_fields(bad: dict) -> None:
    with pytest.raises(ValidationError):
        CompliancePolicy(**bad)


@given(
    compromised=st.none() | st.booleans(),
    encrypted=st.none() | st.booleans(),
    passcode=st.none() | st.booleans(),
    managed=st.booleans(),
    age_h=st.integers(min_value=0, max_value=100),
)
def test_compliant_exactly_when_no_rule_fails(
    compromised: bool | None,
    encrypted: bool | None,
    passcode: bool | None,
    managed: bool,
    age_h: int,
) -> None:
    record = device(
        compromised=compromised,
        encrypted=encrypted,
        passcode=passcode,
        managed=managed,
        last_checkin_at=NOW - timedelta(hours=age_h),
    )
    result = evaluate_compliance(record, DEFAULT, NOW)
    expected_ok = (
        compromised is not True
        and encrypted is not False
        and passcode is not False
        and managed
        and age_h <= 24
    )
    assert result.compliant is expected_ok
    assert (result.reasons == ()) is expected_ok
