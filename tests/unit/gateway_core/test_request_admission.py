"""What to do with a request head (``core.request_admission``), as values: routing,
the Host check, identity and decision, and what a device-password check means. No
sockets: the flow that executes these is tested end to end in
``tests/integration/gateway_proxy``."""

from __future__ import annotations

import base64
from functools import partial

import pytest

from onprem_gateway.core.block_responses import blocked_response
from onprem_gateway.core.credentials import Substitution
from onprem_gateway.core.decision import AUTODISCOVER
from onprem_gateway.core.identity import RULE_AUTH_REQUIRED, Binding, Source
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.request_admission import (
    BASIC_CHALLENGE,
    FORWARD_UNCHANGED,
    RULE_PW1,
    Answer,
    Block,
    Forward,
    ForwardHeadOnly,
    HeadOutcome,
    Reject,
    VerifyPassword,
    admit_request,
    after_password,
    challenges,
    host_name,
    raw,
)
from seg_contract import Access, UnverifiableIdentity
from tests.unit.gateway_core import ntlm_messages as m
from tests.unit.gateway_core.builders import NOW, entry, facts, snapshot

EAS = b"/Microsoft-Server-ActiveSync"
SYNC = EAS + b"?Cmd=Sync&User=alice&DeviceId=alice-phone&DeviceType=iPhone"
PUBLIC = frozenset({"seg.example.com"})


def basic(user: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:pw".encode())


def no_bearer(token: str) -> str:
    raise AssertionError("no Bearer token in these tests")


# The clock and the Bearer verifier are the same in every test here.
_admit = partial(admit_request, now=NOW, verify_bearer=no_bearer)


def policy(**settings: object) -> PolicyIndex:
    snap = snapshot(
        devices=(
            entry("alice", "alice-phone", Access.ALLOW),
            entry("bob", "bob-phone", Access.BLOCK),
        ),
        **settings,
    )
    return PolicyIndex.from_snapshot(snap, NOW)


def head(
    target: bytes = SYNC,
    method: bytes = b"POST",
    *,
    authorization: bytes | None = None,
    host: bytes | None = b"seg.example.com",
    public_hosts: frozenset[str] = frozenset(),
    bound: Binding | None = None,
    index: PolicyIndex | None = None,
) -> HeadOutcome:
    lookup = {b"ms-asprotocolversion": b"14.1", b"user-agent": b"Apple-iPhone/1"}
    if authorization is not None:
        lookup[b"authorization"] = authorization
    if host is not None:
        lookup[b"host"] = host
    index = index or policy()
    return _admit(method, target, lookup, public_hosts=public_hosts, bound=bound, policy=index)


# --- routing and Host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "method", "status", "allow"),
    [
        (b"/", b"GET", 404, None),
        (b"/owa/", b"POST", 404, None),
        (b"/Microsoft-Server-ActiveSyncX", b"POST", 404, None),
        (EAS, b"GET", 405, b"OPTIONS, POST"),
        (EAS + b"?Cmd=Sync", b"PUT", 405, b"OPTIONS, POST"),
        (b"/Autodiscover/Autodiscover.xml", b"PUT", 405, b"GET, POST"),
    ],
)
def test_what_is_not_served_is_answered_before_any_identity(
    target: bytes, method: bytes, status: int, allow: bytes | None
) -> None:
    out = head(target, method, authorization=basic("alice"))
    assert isinstance(out, Answer) and out.status == status
    assert out.headers == (((b"Allow", allow),) if allow else ())


def test_the_host_is_checked_first_when_the_gateway_has_public_names() -> None:
    out = head(b"/nowhere", host=b"other.example.com", public_hosts=PUBLIC)
    assert isinstance(out, Answer) and out.status == 421
    out = head(host=None, public_hosts=PUBLIC)
    assert isinstance(out, Answer) and out.status == 400
    # Port, case and a trailing dot do not matter; without public names any Host goes.
    out = head(host=b"SEG.example.com.:443", public_hosts=PUBLIC, authorization=basic("alice"))
    assert isinstance(out, VerifyPassword)
    assert isinstance(head(host=b"anything", authorization=basic("alice")), VerifyPassword)
    assert host_name(b"[::1]:443") == "::1" and host_name(b" Mail.Example.COM ") == (
        "mail.example.com"
    )


# --- identity and decision -----------------------------------------------------------------


def test_an_admitted_request_has_its_password_checked_next() -> None:
    out = head(authorization=basic("alice"))
    assert isinstance(out, VerifyPassword)
    assert out.facts.user == "alice" and out.decision.access is Access.ALLOW
    assert out.identity.source is Source.BASIC and out.held  # Sync may long-poll
    out = head(
        EAS + b"?Cmd=FolderSync&DeviceId=alice-phone&DeviceType=iPhone",
        authorization=basic("alice"),
    )
    assert isinstance(out, VerifyPassword) and not out.held


def test_autodiscover_is_decided_by_user_in_any_case_of_its_path() -> None:
    for target in (b"/autodiscover/autodiscover.xml", b"/AutoDiscover/AutoDiscover.XML"):
        for method in (b"GET", b"POST"):
            out = head(target, method, authorization=basic("alice"))
            assert isinstance(out, VerifyPassword) and out.facts.command == AUTODISCOVER
            assert out.facts.user == "alice" and not out.held


def test_a_blocked_device_gets_its_blocked_answer_without_framing_headers() -> None:
    out = head(
        EAS + b"?Cmd=Sync&User=bob&DeviceId=bob-phone&DeviceType=iPhone",
        authorization=basic("bob"),
    )
    assert isinstance(out, Block) and out.facts.user == "bob"
    assert out.decision.access is Access.BLOCK
    # EAS 14.1: a 200 whose WBXML carries the blocked status (``core.block_responses``).
    expected = blocked_response(out.facts, out.decision)
    assert (out.status, out.body) == (expected.status, expected.body) == (200, expected.body)
    assert out.body
    names = {name.lower() for name, _ in out.headers}
    assert not names & {b"content-length", b"transfer-encoding", b"connection"}


def test_no_credentials_are_refused_with_the_challenges() -> None:
    out = head()
    assert isinstance(out, Reject) and out.refused.status == 401
    assert out.refused.rule == RULE_AUTH_REQUIRED and out.counted_as == "Sync"
    assert out.headers == challenges(policy())
    assert [value for _, value in out.headers] == [b"NTLM", BASIC_CHALLENGE[0][1]]
    with_negotiate = policy(unverifiable_identity=UnverifiableIdentity.DEVICE_ONLY)
    assert [v for _, v in challenges(with_negotiate)] == [
        b"NTLM",
        b"Negotiate",
        BASIC_CHALLENGE[0][1],
    ]


def test_a_malformed_request_is_refused_without_facts() -> None:
    out = head(EAS + b"?Cmd=NoSuchCommand", authorization=basic("alice"))
    assert isinstance(out, Reject) and out.refused.status == 400
    assert out.refused.facts is None and out.counted_as == out.refused.rule
    assert out.headers == ()


def test_an_ntlm_negotiate_leg_is_forwarded_head_only_undecided() -> None:
    negotiate = m.header("NTLM", m.negotiate()).encode()
    out = head(authorization=negotiate)
    assert isinstance(out, ForwardHeadOnly)
    assert out.facts.user == "" and out.handshake.ntlm is not None


def test_a_connection_bound_by_ntlm_is_decided_as_its_user() -> None:
    out = head(bound=Binding("CORP\\alice", True))
    assert isinstance(out, VerifyPassword) and out.facts.user == "alice"


# --- after the device-password check -------------------------------------------------------


def test_what_the_password_check_means() -> None:
    alice = facts("alice", "alice-phone")
    assert after_password(None, alice, retry_after_s=30) is FORWARD_UNCHANGED
    assert after_password(b"Basic cHcy", alice, retry_after_s=30) == Forward(b"Basic cHcy")
    out = after_password(Substitution.UNAVAILABLE, alice, retry_after_s=30)
    assert isinstance(out, Answer) and out.status == 503
    assert out.headers == ((b"Retry-After", b"30"),)
    for result, limited in ((Substitution.REJECT, False), (Substitution.LIMITED, True)):
        out = after_password(result, alice, retry_after_s=30)
        # Never forwarded (the upstream would count it against the account's lockout).
        assert isinstance(out, Reject) and out.refused.status == 401
        assert out.refused.rule == RULE_PW1 and out.refused.facts is alice
        assert out.headers == BASIC_CHALLENGE and out.limited is limited
        assert out.counted_as == ""  # counted when it was admitted


def test_raw_headers_are_bytes_pairs_minus_framing() -> None:
    assert raw({"Content-Length": "5", "X-A": "1"}) == ((b"X-A", b"1"),)
    assert raw([(b"Connection", b"close"), ("Transfer-Encoding", "chunked")]) == ()
    assert raw((("X-B", b"2"),)) == ((b"X-B", b"2"),)
