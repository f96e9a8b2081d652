"""Builders for the pure control-plane domain tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from lambdas.domain.compliance import DeviceRecord, EnrollmentState

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def device(**changes: Any) -> DeviceRecord:
    base = DeviceRecord(
        mdm_device_id="mdm-1",
        user="alice",
        eas_device_ids=("appl123",),
        enrollment_state=EnrollmentState.ENROLLED,
        enrolled_at=NOW - timedelta(days=3),
        enrollment_changed_at=NOW - timedelta(days=3),
        platform="iPhone",
        model="iPhone15,2",
        os_version="17.1",
        last_checkin_at=NOW - timedelta(hours=1),
        compromised=False,
        encrypted=True,
        passcode=True,
    )
    return replace(base, **changes)
