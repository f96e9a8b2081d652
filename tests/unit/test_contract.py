"""The wire contract: normalisation, strictness, and the exported JSON Schema."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from seg_contract import (
    Access,
    AccessEventBatch,
    DeviceEntry,
    EntrySource,
    normalize_device_id,
    normalize_user,
)
from seg_contract.models import PUSH_MESSAGE, PushChange
from seg_contract.schema import stale_files

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("EXAMPLE\\Alice", "alice"),
        ("alice@Example.com", "alice"),
        ("  ALICE@example.com ", "alice"),
    ],
)
def test_user_forms_resolve_to_one_key(raw: str, expected: str) -> None:
    assert normalize_user(raw) == expected


def test_device_id_is_case_folded() -> None:
    assert normalize_device_id(" ApplF17XK0ABCDE ") == "applf17xk0abcde"


def test_push_message_round_trips_through_the_discriminated_union() -> None:
    entry = DeviceEntry(
        user="alice",
        device_id="dev1",
        access=Access.BLOCK,
        reason="compromised",
        source=EntrySource.COMPLIANCE,
        version=7,
        updated_at=NOW,
    )
    push = PushChange(cluster_id="c1", version=7, devices=(entry,))
    parsed = PUSH_MESSAGE.validate_json(push.model_dump_json())
    assert parsed == push


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        PUSH_MESSAGE.validate_python(
            {
                "type": "pong",
                "cluster_id": "c",
                "version": 1,
                "server_time": NOW.isoformat(),
                "extra": 1,
            }
        )


def test_an_empty_access_event_batch_is_refused() -> None:
    with pytest.raises(ValidationError):
        AccessEventBatch(node_id="n1", events=())


def test_exported_json_schemas_are_up_to_date() -> None:
    assert stale_files() == []
