"""Blocked-device answers: WBXML bytes per MS-ASWBXML and the status/version rules."""

from __future__ import annotations

import pytest
from pyactivesync._wbxml import WBXMLReader

from onprem_gateway.core.block_responses import (
    RETRY_AFTER_S,
    blocked_response,
    speaks_status_bodies,
    status_body,
)
from onprem_gateway.core.facts import Decision
from onprem_gateway.core.wbxml import Element, Page, encode
from seg_contract import Access
from tests.unit.gateway_core.builders import facts

HEADER = bytes([0x03, 0x01, 0x6A, 0x00])  # WBXML 1.3, unknown public id, UTF-8, no strtbl
STR_129 = bytes([0x03]) + b"129" + bytes([0x00])  # STR_I "129" NUL
STR_126 = bytes([0x03]) + b"126" + bytes([0x00])
END = 0x01

# command -> (code page, root token, status token), transcribed from MS-ASWBXML 2.1.2.1.x.
EXPECTED = {
    "Sync": (0, 0x05, 0x0E),  # Code Page 0 AirSync: Sync, Status
    "MoveItems": (5, 0x05, 0x0B),  # Code Page 5 Move
    "GetItemEstimate": (6, 0x05, 0x0E),  # Code Page 6 GetItemEstimate
    "FolderCreate": (7, 0x13, 0x0C),  # Code Page 7 FolderHierarchy
    "FolderDelete": (7, 0x14, 0x0C),
    "FolderUpdate": (7, 0x15, 0x0C),
    "FolderSync": (7, 0x16, 0x0C),
    "ResolveRecipients": (10, 0x05, 0x07),  # Code Page 10 ResolveRecipients
    "ValidateCert": (11, 0x05, 0x0A),  # Code Page 11 ValidateCert
    "Ping": (13, 0x05, 0x07),  # Code Page 13 Ping
    "Provision": (14, 0x05, 0x0B),  # Code Page 14 Provision
    "Search": (15, 0x05, 0x0C),  # Code Page 15 Search
    "Settings": (18, 0x05, 0x06),  # Code Page 18 Settings
    "ItemOperations": (20, 0x05, 0x0D),  # Code Page 20 ItemOperations
    "SendMail": (21, 0x05, 0x12),  # Code Page 21 ComposeMail
    "SmartForward": (21, 0x06, 0x12),
    "SmartReply": (21, 0x07, 0x12),
    "Find": (25, 0x05, 0x0A),  # Code Page 25 Find
}


def expected_body(page: int, root: int, status: int, text: bytes = STR_129) -> bytes:
    switch = b"" if page == 0 else bytes([0x00, page])  # SWITCH_PAGE unless already on 0
    return HEADER + switch + bytes([root | 0x40, status | 0x40]) + text + bytes([END, END])


@pytest.mark.parametrize(("command", "shape"), sorted(EXPECTED.items()))
def test_status_body_exact_bytes(command: str, shape: tuple[int, int, int]) -> None:
    assert status_body(command, 129) == expected_body(*shape)


def test_meeting_response_status_sits_in_result() -> None:
    # Code Page 8 MeetingResponse: MeetingResponse 0x07, Result 0x0A, Status 0x0B;
    # MS-ASCMD 2.2.3.177.9: Status is a child of Result only.
    assert status_body("MeetingResponse", 129) == HEADER + bytes(
        [0x00, 0x08, 0x47, 0x4A, 0x4B]
    ) + STR_129 + bytes([END, END, END])


def test_spec_sync_status_body_is_the_classic_thirteen_bytes() -> None:
    assert status_body("Sync", 129) == bytes.fromhex("03016a00454e033132390001 01".replace(" ", ""))


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("Sync", ["AirSync.Sync", "AirSync.Status"]),
        ("FolderSync", ["FolderHierarchy.FolderSync", "FolderHierarchy.Status"]),
        ("Ping", ["Ping.Ping", "Ping.Status"]),
        ("Provision", ["Provision.Provision", "Provision.Status"]),
        ("ItemOperations", ["ItemOperations.ItemOperations", "ItemOperations.Status"]),
        ("SendMail", ["ComposeMail.SendMail", "ComposeMail.Status"]),
        ("SmartReply", ["ComposeMail.SmartReply", "ComposeMail.Status"]),
        ("GetItemEstimate", ["ItemEstimate.GetItemEstimate", "ItemEstimate.Status"]),
        ("MoveItems", ["Move.MoveItems", "Move.Status"]),
        ("Settings", ["Settings.Settings", "Settings.Status"]),
        ("Search", ["Search.Search", "Search.Status"]),
        ("ResolveRecipients", ["ResolveRecipients.ResolveRecipients", "ResolveRecipients.Status"]),
        ("FolderCreate", ["FolderHierarchy.FolderCreate", "FolderHierarchy.Status"]),
        ("Find", ["Find.Find", "Find.Status"]),
    ],
)
def test_pyactivesync_decodes_our_bodies(command: str, path: list[str]) -> None:
    """Cross-check with an independent EAS client library's WBXML decoder."""
    body = status_body(command, 129)
    assert body is not None
    nodes = WBXMLReader(body).parse()
    for name in path:
        assert len(nodes) == 1 and nodes[0][0] == name, (command, nodes)
        nodes = nodes[0][2]
    assert nodes == [("#text", "129", [])]


def test_encoder_switches_pages_only_when_needed_and_back() -> None:
    tree = Element(
        Page.PROVISION,
        "Provision",
        (Element(Page.SETTINGS, "Status", text="1"), Element(Page.PROVISION, "Status")),
    )
    assert encode(tree) == HEADER + bytes(
        [0x00, 14, 0x45, 0x00, 18, 0x46, 0x03, ord("1"), 0x00, 0x01, 0x00, 14, 0x0B, 0x01]
    )


def test_encoder_refuses_unknown_tags() -> None:
    with pytest.raises(KeyError):
        encode(Element(Page.PING, "Nope"))


# --- which answer for which request ----------------------------------------------------

BLOCK = Decision(Access.BLOCK, "compromised", "entry")


@pytest.mark.parametrize("version", ["14.0", "14.1", "16.0", "16.1"])
def test_14_and_later_get_200_with_status_129(version: str) -> None:
    answer = blocked_response(facts(command="Ping", protocol_version=version), BLOCK)
    assert answer.status == 200
    assert ("Content-Type", "application/vnd.ms-sync.wbxml") in answer.headers
    assert answer.body == expected_body(13, 0x05, 0x07)


@pytest.mark.parametrize("version", ["2.5", "12.0", "12.1", "", "x"])
def test_old_or_unknown_versions_get_403(version: str) -> None:
    answer = blocked_response(facts(command="Sync", protocol_version=version), BLOCK)
    assert (answer.status, answer.body) == (403, b"")


def test_user_block_uses_126_user_disabled_for_sync() -> None:
    decision = Decision(Access.BLOCK, "user is blocked", "user_block")
    answer = blocked_response(facts(command="Sync"), decision)
    assert answer.body == expected_body(0, 0x05, 0x0E, STR_126)


def test_quarantine_content_commands_get_129() -> None:
    decision = Decision(Access.QUARANTINE, "pending", "entry")
    answer = blocked_response(facts(command="ItemOperations"), decision)
    assert (answer.status, answer.body) == (200, expected_body(20, 0x05, 0x0D))


@pytest.mark.parametrize("command", ["GetAttachment", "GetHierarchy", ""])
def test_commands_without_a_wbxml_shape_get_403(command: str) -> None:
    answer = blocked_response(facts(command=command), BLOCK)
    assert answer.status == 403


@pytest.mark.parametrize("rule", ["fail_closed", "no_policy"])
def test_fail_closed_is_503_with_retry_after_not_a_device_block(rule: str) -> None:
    answer = blocked_response(facts(command="Sync"), Decision(Access.BLOCK, "stale", rule))
    assert answer.status == 503
    assert ("Retry-After", str(RETRY_AFTER_S)) in answer.headers
    assert answer.body == b""


def test_version_gate() -> None:
    assert speaks_status_bodies("14.0") and speaks_status_bodies("16.1")
    assert not speaks_status_bodies("12.1") and not speaks_status_bodies("")
