"""EAS request parsing (MS-ASHTTP 2.2.1.1): both query forms, the query's user claim,
limits, errors. The Authorization header is not the parser's business
(``core.identity``; tests in ``test_identity.py``)."""

from __future__ import annotations

import base64
import struct
from urllib.parse import unquote_plus, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core.eas_request import (
    COMMAND_CODES,
    MAX_QUERY_BYTES,
    EasRequestError,
    _unquote,
    parse,
)

PATH = "/Microsoft-Server-ActiveSync"
SPEC_EXAMPLE = "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"


def b64_query(
    *,
    version: int = 141,
    command: int = 0,
    locale: int = 0x0409,
    device_id: bytes = b"dev1",
    policy_key: int | None = None,
    device_type: bytes = b"iPhone",
    params: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
) -> str:
    """Build a base64 query byte by byte from MS-ASHTTP 2.2.1.1.1.1 (not from the parser)."""
    data = bytes([version, command]) + struct.pack("<H", locale)
    data += bytes([len(device_id)]) + device_id
    if policy_key is None:
        data += b"\x00"
    else:
        data += b"\x04" + struct.pack("<I", policy_key)
    data += bytes([len(device_type)]) + device_type
    for tag, value in params:
        data += bytes([tag, len(value)]) + value
    return base64.b64encode(data).decode("ascii")


def basic(user: str, password: str = "pw") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the spec's example and the base64 form ------------------------------------------


def test_spec_example_decodes_to_14_0_sync_v140device_smartphone() -> None:
    facts = parse("POST", f"{PATH}?{SPEC_EXAMPLE}", {})
    assert facts.query_form == "base64"
    assert facts.protocol_version == "14.0"
    assert facts.command == "Sync"
    assert facts.locale == 0x0409
    assert facts.device_id == "v140device"  # "v140Device", case-folded for lookups
    assert facts.device_type == "SmartPhone"
    assert facts.policy_key is None
    assert facts.user == ""


@pytest.mark.parametrize(("code", "name"), sorted(COMMAND_CODES.items()))
def test_every_base64_command_code(code: int, name: str) -> None:
    facts = parse("POST", f"{PATH}?{b64_query(command=code)}", {})
    assert facts.command == name


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0, "Sync"),
        (1, "SendMail"),
        (2, "SmartForward"),
        (3, "SmartReply"),
        (4, "GetAttachment"),
        (9, "FolderSync"),
        (10, "FolderCreate"),
        (11, "FolderDelete"),
        (12, "FolderUpdate"),
        (13, "MoveItems"),
        (14, "GetItemEstimate"),
        (15, "MeetingResponse"),
        (16, "Search"),
        (17, "Settings"),
        (18, "Ping"),
        (19, "ItemOperations"),
        (20, "Provision"),
        (21, "ResolveRecipients"),
        (22, "ValidateCert"),
    ],
)
def test_command_code_table_matches_ms_ashttp(code: int, name: str) -> None:
    assert COMMAND_CODES[code] == name


def test_base64_policy_key_is_little_endian_uint32() -> None:
    facts = parse("POST", f"{PATH}?{b64_query(policy_key=3_212_836_741)}", {})
    assert facts.policy_key == "3212836741"


def test_base64_parameters_options_and_user_tag() -> None:
    query = b64_query(
        command=3,
        params=[(1, b"5"), (3, b"5:12"), (7, b"\x03"), (8, b"EXAMPLE\\Alice")],
    )
    facts = parse("POST", f"{PATH}?{query}", {"user-agent": "Outlook-iOS/2.0"})
    assert facts.command == "SmartReply"
    assert facts.user == "alice"
    assert facts.raw_user == "EXAMPLE\\Alice"
    assert dict(facts.parameters) == {
        "CollectionId": "5",
        "ItemId": "5:12",
        "SaveInSent": "T",
        "AcceptMultiPart": "T",
        "Options": "3",
    }
    assert facts.user_agent == "Outlook-iOS/2.0"


def test_base64_without_user_tag_has_no_query_user() -> None:
    facts = parse("POST", f"{PATH}?{b64_query()}", {"authorization": basic("bob@example.com")})
    assert facts.user == "" and facts.raw_user == ""


def test_base64_binary_device_id_is_upper_hex() -> None:
    guid = bytes(range(0xA0, 0xB0))
    facts = parse("POST", f"{PATH}?{b64_query(device_id=guid)}", {})
    assert facts.device_id == guid.hex()  # upper-case hex, then case-folded


def test_base64_percent_encoded_and_unpadded_forms_are_accepted() -> None:
    query = b64_query(device_id=b"abcdefgh1")
    encoded = query.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert parse("POST", f"{PATH}?{encoded}", {}).device_id == "abcdefgh1"
    assert parse("POST", f"{PATH}?{query.rstrip('=')}", {}).device_id == "abcdefgh1"


def test_base64_version_byte_sets_protocol_version_and_ignores_header() -> None:
    facts = parse("POST", f"{PATH}?{b64_query(version=161)}", {"ms-asprotocolversion": "12.1"})
    assert facts.protocol_version == "16.1"


# --- the plain form --------------------------------------------------------------------


def test_plain_query_with_headers() -> None:
    facts = parse(
        "POST",
        f"{PATH}?Cmd=Sync&User=EXAMPLE%5CAlice&DeviceId=ApplDNPX&DeviceType=iPhone",
        {
            "ms-asprotocolversion": "14.1",
            "x-ms-policykey": "1234567890",
            "user-agent": "Apple-iPhone9C1/1402.243",
        },
    )
    assert facts.query_form == "plain"
    assert (facts.command, facts.user, facts.device_id, facts.device_type) == (
        "Sync",
        "alice",
        "appldnpx",
        "iPhone",
    )
    assert facts.protocol_version == "14.1"
    assert facts.policy_key == "1234567890"
    assert facts.raw_user == "EXAMPLE\\Alice"
    assert facts.user_agent == "Apple-iPhone9C1/1402.243"


@pytest.mark.parametrize("name", sorted({*COMMAND_CODES.values(), "Find"}))
def test_every_plain_command_name(name: str) -> None:
    facts = parse("POST", f"{PATH}?Cmd={name}&DeviceId=d&DeviceType=t", {})
    assert facts.command == name


def test_plain_names_are_case_insensitive_like_iis() -> None:
    facts = parse("POST", f"{PATH}?cmd=ping&deviceid=ABC&devicetype=Android&user=u", {})
    assert (facts.command, facts.device_id, facts.user) == ("Ping", "abc", "u")


def test_plain_command_parameters_are_kept() -> None:
    facts = parse(
        "POST",
        f"{PATH}?Cmd=SmartForward&DeviceId=d&DeviceType=t&ItemId=5%3A1&CollectionId=5&SaveInSent=T",
        {},
    )
    assert dict(facts.parameters) == {"ItemId": "5:1", "CollectionId": "5", "SaveInSent": "T"}


def test_the_parser_reports_the_query_user_and_ignores_authorization() -> None:
    # What the query claims; core.admission replaces it with the authenticated user.
    facts = parse(
        "POST",
        f"{PATH}?Cmd=Sync&User=alice&DeviceId=d&DeviceType=t",
        {"authorization": basic("CORP\\Mallory")},
    )
    assert facts.user == "alice"
    assert facts.raw_user == "alice"


def test_options_needs_no_device_id() -> None:
    facts = parse("OPTIONS", PATH, {"authorization": basic("alice")})
    assert (facts.method, facts.command, facts.device_id, facts.user) == (
        "OPTIONS",
        "",
        "",
        "",
    )
    assert facts.query_form == "none"


# --- malformed input: one typed error with a clear reason ------------------------------

MALFORMED = [
    ("POST", f"{PATH}?!!!notbase64", {}, "neither"),
    ("POST", f"{PATH}?{SPEC_EXAMPLE[:8]}", {}, "truncated"),
    ("POST", f"{PATH}?{b64_query(command=99)}", {}, "unknown command code 99"),
    ("POST", f"{PATH}?{b64_query(device_id=b'')}", {}, "empty DeviceId"),
    ("POST", f"{PATH}?{b64_query(params=[(9, b'x')])}", {}, "unknown parameter tag 9"),
    ("POST", f"{PATH}?{b64_query(params=[(8, b'a'), (8, b'b')])}", {}, "more than once"),
    ("POST", f"{PATH}?{b64_query(params=[(7, b'ab')])}", {}, "Options is not one byte"),
    ("POST", f"{PATH}?{b64_query(device_type=bytes([0xFF]))}", {}, "not valid UTF-8"),
    ("POST", f"{PATH}?DeviceId=d&DeviceType=t", {}, "without a command"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceType=t", {}, "without a DeviceId"),
    ("POST", PATH, {}, "without a command"),
    ("POST", f"{PATH}?Cmd=Frobnicate&DeviceId=d", {}, "unknown command"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=a&deviceid=b", {}, "more than once"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=a%0Ab", {}, "control characters"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=%FF", {}, "not valid UTF-8"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=" + "x" * 129, {}, "longer than 128"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=%20%20", {}, "DeviceId is empty"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d&x=" + "y" * MAX_QUERY_BYTES, {}, "longer than 2048"),
    ("GET", f"{PATH}?Cmd=Sync&DeviceId=d", {}, "not used by Exchange ActiveSync"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"x-ms-policykey": "abc"}, "32-bit"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"x-ms-policykey": "99999999999"}, "32-bit"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"ms-asprotocolversion": "fourteen"}, "N.N"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"user-agent": "a\x07b"}, "control characters"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"user-agent": "u" * 513}, "longer than 512"),
    ("POST", f"{PATH}?Cmd=Sync&DeviceId=d&User=%40example.com", {}, "empty once normalised"),
]


@pytest.mark.parametrize(("method", "target", "headers", "reason"), MALFORMED)
def test_malformed_requests_raise_eas_request_error(
    method: str, target: str, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(EasRequestError) as caught:
        parse(method, target, headers)
    assert reason in caught.value.reason


# --- fuzzing: nothing but EasRequestError, ever ----------------------------------------

_header_names = st.sampled_from(
    ["authorization", "user-agent", "ms-asprotocolversion", "x-ms-policykey", "x-other"]
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["POST", "OPTIONS", "post", "GET"]),
    query=st.text(max_size=300),
    headers=st.dictionaries(_header_names, st.text(max_size=80), max_size=4),
)
def test_fuzzed_text_never_raises_anything_else(
    method: str, query: str, headers: dict[str, str]
) -> None:
    try:
        parse(method, f"{PATH}?{query}", headers)
    except EasRequestError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=120), auth=st.binary(max_size=40))
def test_fuzzed_base64_bytes_never_raise_anything_else(raw: bytes, auth: bytes) -> None:
    query = base64.b64encode(raw).decode()
    headers = {"authorization": "Basic " + base64.b64encode(auth).decode()}
    try:
        facts = parse("POST", f"{PATH}?{query}", headers)
    except EasRequestError as exc:
        assert exc.reason
    else:
        assert facts.device_id and facts.command


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(min_size=1, max_size=40).filter(lambda s: s.isprintable()),
    device=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
    ),
)
def test_base64_round_trip_of_printable_identities(user: str, device: str) -> None:
    query = b64_query(device_id=device.encode(), params=[(8, user.encode()[:255])])
    try:
        facts = parse("POST", f"{PATH}?{query}", {})
    except EasRequestError:
        return  # e.g. a user that normalises to nothing
    assert facts.device_id == device.strip().casefold()


def test_header_obs_text_is_kept_but_c0_controls_are_refused() -> None:
    # The data path decodes headers as latin-1: UTF-8 "€" arrives as "â\x82¬".
    agent = "Mail/1 €".encode().decode("latin-1")
    facts = parse("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"user-agent": agent})
    assert facts.user_agent == agent
    with pytest.raises(EasRequestError, match="control characters"):
        parse("POST", f"{PATH}?Cmd=Sync&DeviceId=d", {"user-agent": "a\x00b"})


def test_identity_values_refuse_invisible_characters() -> None:
    # A zero-width space must not make "eve" a different, unblocked user.
    with pytest.raises(EasRequestError, match="control characters"):
        parse("POST", f"{PATH}?Cmd=Sync&DeviceId=d&User=e%E2%80%8Bve", {})


_printable = st.text(min_size=1, max_size=40).filter(lambda s: s.isprintable() and s.strip())


@settings(max_examples=200, deadline=None)
@given(user=_printable, device=_printable, device_type=_printable)
def test_plain_round_trip_of_percent_encoded_identities(
    user: str, device: str, device_type: str
) -> None:
    query = urlencode({"Cmd": "Sync", "User": user, "DeviceId": device, "DeviceType": device_type})
    try:
        facts = parse("POST", f"{PATH}?{query}", {})
    except EasRequestError as exc:
        assert "empty once normalised" in exc.reason  # e.g. User="@x"
        return
    assert facts.raw_user == user
    assert facts.device_id == device.strip().casefold()
    assert facts.device_type == device_type.strip()


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from("%+25aAfFgG0x9é€ ") | st.characters(max_codepoint=0x7F),
        max_size=30,
    )
)
def test_percent_decoding_matches_urllib(text: str) -> None:
    """The fast decoder agrees with urllib.parse.unquote_plus (strict UTF-8)."""
    try:
        expected: str | None = unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        expected = None
    try:
        got: str | None = _unquote(text, "value")
    except EasRequestError:
        got = None
    assert got == expected
