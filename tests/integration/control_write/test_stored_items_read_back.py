"""Items as the adapters stored them before the DynamoDB toolkit (hand-marshalled,
literal low-level attribute values) read back the same through today's code, and
today's writes store the same attribute values: no migration of stored data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lambdas.domain.compliance import ComplianceState, DeviceRecord, EnrollmentState
from lambdas.domain.mdm_events import EnrollmentEvent
from seg_contract import entry_key

from .conftest import T0, World

AT = "2026-11-27T09:00:00.000000Z"


def _put(world: World, table: str, item: dict[str, Any]) -> None:
    world.aws.dynamodb.put_item(TableName=world.aws.settings.table(table), Item=item)


def _stored(world: World, table: str, key: dict[str, Any]) -> dict[str, Any]:
    response = world.aws.dynamodb.get_item(
        TableName=world.aws.settings.table(table), Key=key, ConsistentRead=True
    )
    return dict(response["Item"])


# --- devices ------------------------------------------------------------------------------

OLD_DEVICE: dict[str, Any] = {
    "mdm_device_id": {"S": "mdm-old"},
    "kind": {"S": "device"},
    "user": {"S": "alice@example.com"},
    "eas_device_ids": {"L": [{"S": "dev-a"}, {"S": "dev-b"}]},
    "platform": {"S": "ios"},
    "model": {"S": "iPhone"},
    "os_version": {"S": "17.1"},
    "managed": {"BOOL": True},
    "enrollment_state": {"S": "enrolled"},
    "enrolled_at": {"S": AT},
    "enrollment_changed_at": {"S": AT},
    "checkin_partition": {"S": "enrolled"},
    "last_checkin_at": {"S": "2026-11-27T10:00:00.000000Z"},
    "checked_in": {"BOOL": True},
    "compromised": {"BOOL": False},
    "encrypted": {"BOOL": True},
    "passcode": {"BOOL": True},
    "compliance_state": {"S": "compliant"},
    "compliance_reasons": {"L": []},
    "evaluated_at": {"S": "2026-11-27T10:00:01.000000Z"},
    "retired_keys": {"SS": ["k1", "k2"]},
}


def test_a_device_item_stored_by_the_old_code_reads_back_the_same(world: World) -> None:
    _put(world, "devices", OLD_DEVICE)
    _put(
        world,
        "devices",
        {
            "mdm_device_id": {"S": "#email\x1f" + entry_key("alice@example.com", "dev-a")},
            "kind": {"S": "email_link"},
            "email_device_key": {"S": entry_key("alice@example.com", "dev-a")},
            "owner": {"S": "mdm-old"},
        },
    )
    assert world.devices.get("mdm-old") == DeviceRecord(
        mdm_device_id="mdm-old",
        user="alice@example.com",
        eas_device_ids=("dev-a", "dev-b"),
        enrollment_state=EnrollmentState.ENROLLED,
        enrolled_at=T0,
        enrollment_changed_at=T0,
        platform="ios",
        model="iPhone",
        os_version="17.1",
        managed=True,
        last_checkin_at=T0 + timedelta(hours=1),
        compromised=False,
        encrypted=True,
        passcode=True,
        compliance_state=ComplianceState.COMPLIANT,
        compliance_reasons=(),
        evaluated_at=T0 + timedelta(hours=1, seconds=1),
        retired_keys=frozenset({"k1", "k2"}),
    )
    assert world.devices.find_by_email_device("alice@example.com", "dev-a") == "mdm-old"
    page, cursor = world.devices.list_devices(10)
    assert [d.mdm_device_id for d in page] == ["mdm-old"] and cursor is None


def test_an_enrollment_stores_the_attribute_values_the_old_code_stored(world: World) -> None:
    event = EnrollmentEvent(
        event_id="e-1",
        occurred_at=T0,
        mdm_device_id="mdm-new",
        user="bob",
        eas_device_ids=("dev-x",),
        platform="android",
        model="Pixel",
        os_version="14",
    )
    assert world.devices.apply_enrollment(event)
    assert _stored(world, "devices", {"mdm_device_id": {"S": "mdm-new"}}) == {
        "mdm_device_id": {"S": "mdm-new"},
        "kind": {"S": "device"},
        "user": {"S": "bob"},
        "eas_device_ids": {"L": [{"S": "dev-x"}]},
        "platform": {"S": "android"},
        "model": {"S": "Pixel"},
        "os_version": {"S": "14"},
        "managed": {"BOOL": True},
        "enrollment_state": {"S": "enrolled"},
        "enrolled_at": {"S": AT},
        "enrollment_changed_at": {"S": AT},
        "checkin_partition": {"S": "enrolled"},
        "last_checkin_at": {"S": AT},
        "checked_in": {"BOOL": False},
        "compliance_state": {"S": "unknown"},
    }
    link = "#email\x1f" + entry_key("bob", "dev-x")
    assert _stored(world, "devices", {"mdm_device_id": {"S": link}}) == {
        "mdm_device_id": {"S": link},
        "kind": {"S": "email_link"},
        "email_device_key": {"S": entry_key("bob", "dev-x")},
        "owner": {"S": "mdm-new"},
    }
