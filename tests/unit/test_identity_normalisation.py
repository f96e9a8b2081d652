"""One normalisation of user names (``seg_contract.identity``) across every place a user
becomes a key: the gateway's identity (Basic, NTLM, Bearer), the MDM intake, the
console's override requests and the policy index the gateway looks entries up in. A
name spelled ``DOMAIN\\user``, ``user@domain`` or in another case must land on one key."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from lambdas.domain.mdm_events import MDM_EVENT
from lambdas.domain.messages import ManualOverrideRequest
from onprem_gateway.core.admission import Admitted, admit
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, normalize_user
from tests.unit.gateway_core import ntlm_messages as m
from tests.unit.gateway_core.builders import NOW, entry, snapshot

FORMS = [
    ("alice", "alice"),
    ("Alice", "alice"),
    ("CORP\\Alice", "alice"),
    ("corp.example\\ALICE", "alice"),
    ("alice@Corp.Example", "alice"),
    ("  ALICE@corp.example ", "alice"),
    ("Corp\\Alice@corp.example", "alice"),
]


@pytest.mark.parametrize(("raw", "key"), FORMS)
def test_the_contract_rule(raw: str, key: str) -> None:
    assert normalize_user(raw) == key


@pytest.mark.parametrize(("raw", "key"), FORMS)
def test_mdm_intake_and_console_use_the_contract_rule(raw: str, key: str) -> None:
    event = MDM_EVENT.validate_python(
        {
            "type": "enrollment",
            "event_id": "e1",
            "occurred_at": "2026-11-27T00:00:00Z",
            "mdm_device_id": "m1",
            "user": raw,
            "eas_device_ids": ["Dev1"],
        }
    )
    assert event.user == key  # type: ignore[union-attr]
    override = ManualOverrideRequest(
        user=raw,
        device_id="Dev1",
        action="block",  # type: ignore[arg-type]
        reason="",
        actor="admin",
        requested_at=datetime(2026, 11, 27, tzinfo=UTC),
        request_id="r1",
    )
    assert override.user == key


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()


@pytest.mark.parametrize("raw", [raw.strip() for raw, _ in FORMS])
@pytest.mark.parametrize("scheme", ["basic", "ntlm"])
def test_the_gateway_finds_the_entry_the_mdm_wrote_however_the_device_spells_it(
    raw: str, scheme: str
) -> None:
    # The MDM reported "alice@corp.example"; the entry is keyed by the normalised name.
    index = PolicyIndex.from_snapshot(
        snapshot(devices=(entry(normalize_user("alice@corp.example"), "dev1", Access.ALLOW),)),
        NOW,
    )
    if scheme == "basic":
        authorization = _basic(raw)
    else:
        domain, _, user = raw.rpartition("\\")
        authorization = m.header("NTLM", m.authenticate(user, domain))
    out = admit(
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=DEV1&DeviceType=iPhone",
        {"authorization": authorization, "ms-asprotocolversion": "14.1"},
        autodiscover=False,
        bound=None,
        policy=index,
        now=NOW,
        verify_bearer=lambda token: "",
    )
    assert isinstance(out, Admitted), out
    assert out.facts.user == "alice" and out.decision.rule == "entry"
