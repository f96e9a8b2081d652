"""Reading Authorization headers (``core.authentication``, ``core.ntlm``): one table per
scheme, malformed values, fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core.authentication import (
    AuthorizationError,
    Scheme,
    basic_credentials,
    read_authorization,
)
from onprem_gateway.core.ntlm import NtlmError, read_negotiate, read_ntlm
from tests.unit.gateway_core import ntlm_messages as m


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- Basic ------------------------------------------------------------------------------

BASIC_ACCEPTED = [
    ("Basic " + b64(b"alice:pw"), "alice", b"pw"),
    ("basic " + b64(b"alice:pw"), "alice", b"pw"),  # the scheme is case-insensitive
    ("BASIC " + b64(b"CORP\\alice:pw"), "CORP\\alice", b"pw"),
    ("Basic " + b64(b"alice@corp.example:p:w"), "alice@corp.example", b"p:w"),  # first colon
    ("Basic " + b64(b"alice:"), "alice", b""),  # an empty password is the server's business
    ("Basic " + b64("alice:pässwörd".encode()), "alice", "pässwörd".encode()),
    ("Basic " + b64(b"alice:\xff\xfe"), "alice", b"\xff\xfe"),  # password bytes kept as sent
]


@pytest.mark.parametrize(("value", "user", "password"), BASIC_ACCEPTED)
def test_basic_accepted(value: str, user: str, password: bytes) -> None:
    presented = read_authorization(value)
    assert presented is not None
    assert (presented.scheme, presented.user, presented.password) == (
        Scheme.BASIC,
        user,
        password,
    )
    assert not password or password not in repr(presented).encode()  # never in a repr


BASIC_REFUSED = [
    ("Basic\t" + b64(b"alice:pw"), "one space"),
    ("Basic  " + b64(b"alice:pw"), "not base64"),
    ("Basic " + b64(b"alice:pw") + " ", "not base64"),
    ("Basic", "one space"),
    ("Basic ", "one space"),
    ("Basic," + b64(b"alice:pw"), "one space"),
    ("Basicx " + b64(b"alice:pw"), "not exactly Basic"),
    ("Basic " + b64(b"alice:pw").rstrip("="), "padded base64"),  # missing padding
    ("Basic " + b64(b"alice:pw")[:4] + "\n" + b64(b"alice:pw")[4:], "not base64"),
    ("Basic %%%", "not base64"),
    ("Basic YWxp-2U6cHc=", "not base64"),  # base64url is not Basic's alphabet
    ("Basic " + b64(b"nocolon"), "no ':'"),
    ("Basic " + b64(b":pw"), "empty"),
    ("Basic " + b64("jösé:pw".encode()), "not ASCII"),
    ("Basic " + b64(b"ali\x07ce:pw"), "control characters"),
    ("Basic " + b64(b"a" * 300 + b":pw"), "too long"),
    ("Basic " + "QQ==" * 300, "longer than"),
]


@pytest.mark.parametrize(("value", "reason"), BASIC_REFUSED)
def test_basic_malformed_is_refused_never_downgraded(value: str, reason: str) -> None:
    with pytest.raises(AuthorizationError) as caught:
        read_authorization(value)
    assert caught.value.scheme is Scheme.BASIC
    assert reason in caught.value.reason
    assert "pw" not in caught.value.reason


def test_basic_credentials_helper_decodes_the_password() -> None:
    assert basic_credentials("Basic " + b64(b"a@b.c:p:w")) == ("a@b.c", "p:w")
    assert basic_credentials(None) is None
    assert basic_credentials(m.header("NTLM", m.negotiate())) is None
    with pytest.raises(AuthorizationError, match="not UTF-8"):
        basic_credentials("Basic " + b64(b"a:\xff"))


# --- NTLM -------------------------------------------------------------------------------

NTLM_TABLE = [
    ("NTLM", m.negotiate(), 1, ""),
    ("ntlm", m.negotiate(), 1, ""),
    ("NTLM", m.authenticate("alice", "CORP"), 3, "CORP\\alice"),
    ("NTLM", m.authenticate("alice@corp.example"), 3, "alice@corp.example"),
    ("NTLM", m.authenticate("Älice", "CORP"), 3, "CORP\\Älice"),  # UTF-16LE names
    ("NTLM", m.authenticate("alice", "CORP", unicode=False), 3, "CORP\\alice"),  # OEM ASCII
    ("Negotiate", m.negotiate(), 1, ""),  # raw NTLM inside Negotiate
    ("Negotiate", m.authenticate("bob", "CORP"), 3, "CORP\\bob"),
    ("Negotiate", m.spnego_init(m.negotiate()), 1, ""),
    ("Negotiate", m.spnego_response(m.authenticate("bob", "CORP")), 3, "CORP\\bob"),
]


@pytest.mark.parametrize(("scheme", "blob", "message_type", "account"), NTLM_TABLE)
def test_ntlm_messages_name_their_user(
    scheme: str, blob: bytes, message_type: int, account: str
) -> None:
    presented = read_authorization(m.header(scheme, blob))
    assert presented is not None and presented.ntlm is not None
    assert presented.connection_bound
    assert presented.ntlm.message_type == message_type
    assert presented.handshake is (message_type == 1)
    assert presented.user == account


@pytest.mark.parametrize(
    "blob",
    [
        m.kerberos_ticket(),
        m.spnego_init(m.kerberos_ticket()[2:], first_mech=m.KRB5_OID),
        m.spnego_response(b"\x6e\x03\x02\x01\x05"),
    ],
)
def test_negotiate_with_kerberos_names_no_user(blob: bytes) -> None:
    presented = read_authorization(m.header("Negotiate", blob))
    assert presented is not None
    assert (presented.scheme, presented.ntlm, presented.user) == (Scheme.NEGOTIATE, None, "")
    assert presented.connection_bound


def test_spnego_init_whose_first_mechanism_is_kerberos_is_not_read_as_ntlm() -> None:
    # The optimistic token belongs to the first mechanism: NTLM bytes there would be
    # handed to Kerberos by the server, so they name no one.
    blob = m.spnego_init(m.authenticate("mallory"), first_mech=m.KRB5_OID)
    presented = read_authorization(m.header("Negotiate", blob))
    assert presented is not None and presented.ntlm is None


NTLM_REFUSED = [
    ("NTLM " + b64(m.challenge()), "CHALLENGE"),
    ("NTLM " + b64(b"NTLMSSP\x00\x09\x00\x00\x00"), "unknown NTLM message type"),
    ("NTLM " + b64(b"not ntlm at all"), "no NTLMSSP signature"),
    ("NTLM " + b64(m.authenticate("alice")[:40]), "shorter than its fixed fields"),
    ("NTLM " + b64(m.authenticate("alice")[:-6]), "outside the message"),
    ("NTLM " + b64(m.authenticate("", raw_user=b"\x00\xd8")), "not UTF-16LE"),
    ("NTLM " + b64(m.authenticate("", unicode=False, raw_user=b"\xe9t\xe9")), "ASCII"),
    ("NTLM " + b64(m.authenticate("", raw_user=b"")), "no user name"),
    ("NTLM", "one space"),
    ("NTLMSSP " + b64(m.negotiate()), "not exactly NTLM"),
    ("NTLM " + b64(m.negotiate()).rstrip("="), "base64"),
    ("Negotiate " + b64(b""), "one space"),
]


@pytest.mark.parametrize(("value", "reason"), NTLM_REFUSED)
def test_malformed_ntlm_is_refused(value: str, reason: str) -> None:
    with pytest.raises(AuthorizationError) as caught:
        read_authorization(value)
    assert reason in caught.value.reason


def test_anonymous_authenticate_names_nobody() -> None:
    message = read_ntlm(m.authenticate("", nt_response=b""))
    assert message.anonymous and message.account == ""


def test_long_ntlm_messages_are_refused() -> None:
    with pytest.raises(NtlmError, match="longer than"):
        read_ntlm(m.SIGNATURE + b"\x03\x00\x00\x00" + b"\x00" * 9000)


# --- Bearer and other schemes --------------------------------------------------------------


def test_bearer_is_read_not_verified() -> None:
    presented = read_authorization("Bearer eyJ.eyJ.sig_-")
    assert presented is not None and presented.scheme is Scheme.BEARER
    assert presented.token == "eyJ.eyJ.sig_-" and "eyJ" not in repr(presented)
    with pytest.raises(AuthorizationError, match="token68"):
        read_authorization("Bearer a b")
    with pytest.raises(AuthorizationError, match="token68"):
        read_authorization("Bearer a=b")


def test_unknown_schemes_are_reported_by_name() -> None:
    presented = read_authorization("Digest username=alice")
    assert presented is not None and presented.scheme is Scheme.OTHER
    assert presented.other_scheme == "Digest" and not presented.connection_bound
    with pytest.raises(AuthorizationError, match="without a scheme"):
        read_authorization(" x")
    assert read_authorization(None) is None


# --- fuzzing: nothing but AuthorizationError, ever ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["Basic", "NTLM", "Negotiate", "Bearer", "X"]),
    raw=st.binary(max_size=200),
)
def test_fuzzed_credentials_never_raise_anything_else(scheme: str, raw: bytes) -> None:
    for blob in (raw, m.SIGNATURE + raw, b"\x60" + raw, b"\xa1" + raw):
        try:
            read_authorization(f"{scheme} {b64(blob)}")
        except AuthorizationError as exc:
            assert exc.reason


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_fuzzed_negotiate_tokens_never_raise_anything_else(raw: bytes) -> None:
    try:
        read_negotiate(raw)
    except NtlmError as exc:
        assert exc.reason
