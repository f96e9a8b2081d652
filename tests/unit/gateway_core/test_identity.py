"""Who is asking (``core.identity``) and the admission decision (``core.admission``):
one row per line of the identity table, then the property that matters most: no request
is ever admitted on behalf of a user other than the one its credentials authenticate."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onprem_gateway.core.admission import Admitted, Blocked, HandshakeLeg, Refused, admit
from onprem_gateway.core.bearer import BearerError
from onprem_gateway.core.identity import (
    RULE_AUTH_MALFORMED,
    RULE_AUTH_REQUIRED,
    RULE_BEARER,
    RULE_UNVERIFIABLE,
    Binding,
    Handshake,
    Identity,
    Source,
    Unidentified,
    identify,
)
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, UnverifiableIdentity, normalize_user
from tests.unit.gateway_core import ntlm_messages as m
from tests.unit.gateway_core.builders import NOW, entry, snapshot

PATH = "/Microsoft-Server-ActiveSync"
REFUSE, DEVICE_ONLY = UnverifiableIdentity.REFUSE, UnverifiableIdentity.DEVICE_ONLY


def basic(user: str, password: str = "pw") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def verify_bearer(token: str) -> str:
    """A stand-in for ``BearerTokens.verify`` (real verification: test_bearer.py):
    ``bearer(user)`` tokens are valid, everything else is refused."""
    if not token.startswith("ok."):
        raise BearerError("Bearer token signature does not verify")
    return base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)).decode()


def bearer(user: str) -> str:
    return "Bearer ok." + base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def who(
    authorization: str | None,
    *,
    bound: Binding | None = None,
    query_user: str = "query-user",
    unverifiable: UnverifiableIdentity = REFUSE,
) -> Identity | Handshake | Unidentified:
    return identify(
        authorization,
        bound=bound,
        query_user=query_user,
        unverifiable=unverifiable,
        verify_bearer=verify_bearer,
    )


IDENTITY_TABLE = [
    # (authorization, bound, mode, expected source or refusal rule, expected user)
    (basic("CORP\\alice"), None, REFUSE, Source.BASIC, "CORP\\alice"),
    (basic("alice"), Binding("bob", True), REFUSE, Source.BASIC, "alice"),
    (m.header("NTLM", m.authenticate("alice", "CORP")), None, REFUSE, Source.NTLM, "CORP\\alice"),
    (
        m.header("Negotiate", m.spnego_response(m.authenticate("bob"))),
        None,
        REFUSE,
        Source.NTLM,
        "bob",
    ),
    (bearer("carol@corp.example"), None, REFUSE, Source.BEARER, "carol@corp.example"),
    (None, Binding("CORP\\alice", True), REFUSE, Source.CONNECTION, "CORP\\alice"),
    (None, Binding("", False), DEVICE_ONLY, Source.UNVERIFIED, "query-user"),
    (
        m.header("Negotiate", m.kerberos_ticket()),
        None,
        DEVICE_ONLY,
        Source.UNVERIFIED,
        "query-user",
    ),
    ("Digest username=x", None, DEVICE_ONLY, Source.UNVERIFIED, "query-user"),
    # Refusals: the rule that names why.
    (None, None, REFUSE, RULE_AUTH_REQUIRED, ""),
    (None, None, DEVICE_ONLY, RULE_AUTH_REQUIRED, ""),
    (None, Binding("", False), REFUSE, RULE_UNVERIFIABLE, ""),
    (m.header("Negotiate", m.kerberos_ticket()), None, REFUSE, RULE_UNVERIFIABLE, ""),
    ("Digest username=x", None, REFUSE, RULE_UNVERIFIABLE, ""),
    ("Bearer forged.token", None, REFUSE, RULE_BEARER, ""),
    (
        "Basic\t" + base64.b64encode(b"alice:pw").decode(),
        None,
        DEVICE_ONLY,
        RULE_AUTH_MALFORMED,
        "",
    ),
    ("Basicfoo", None, DEVICE_ONLY, RULE_AUTH_MALFORMED, ""),
    (m.header("NTLM", m.authenticate("", nt_response=b"")), None, REFUSE, "auth_refused", ""),
]


@pytest.mark.parametrize(("auth", "bound", "mode", "expected", "user"), IDENTITY_TABLE)
def test_identity_table(
    auth: str | None,
    bound: Binding | None,
    mode: UnverifiableIdentity,
    expected: object,
    user: str,
) -> None:
    result = who(auth, bound=bound, unverifiable=mode)
    if isinstance(expected, Source):
        assert isinstance(result, Identity)
        assert (result.source, result.user) == (expected, user)
    else:
        assert isinstance(result, Unidentified)
        assert result.rule == expected and result.status == 401


def test_an_ntlm_negotiate_leg_is_a_handshake_with_no_identity() -> None:
    for blob in (m.negotiate(), m.spnego_init(m.negotiate())):
        for scheme in ("NTLM", "Negotiate"):
            if scheme == "NTLM" and blob[:1] == b"\x60":
                continue
            result = who(m.header(scheme, blob), bound=Binding("alice", True))
            assert isinstance(result, Handshake)


def test_device_only_without_a_query_user_is_refused() -> None:
    result = who(
        m.header("Negotiate", m.kerberos_ticket()), query_user="", unverifiable=DEVICE_ONLY
    )
    assert isinstance(result, Unidentified) and result.rule == RULE_UNVERIFIABLE


def test_bearer_refusal_carries_the_rfc6750_error() -> None:
    result = who("Bearer forged")
    assert isinstance(result, Unidentified) and result.bearer_error == "invalid_token"


# --- admission ----------------------------------------------------------------------------


def policy(mode: UnverifiableIdentity = REFUSE, **settings: object) -> PolicyIndex:
    snap = snapshot(
        devices=(
            entry("alice", "alice-phone", Access.ALLOW),
            entry("bob", "bob-phone", Access.BLOCK),
        ),
        unverifiable_identity=mode,
        **settings,
    )
    return PolicyIndex.from_snapshot(snap, NOW)


def run(
    target: str,
    authorization: str | None = None,
    *,
    method: str = "POST",
    bound: Binding | None = None,
    index: PolicyIndex | None = None,
    autodiscover: bool = False,
) -> object:
    headers = {"ms-asprotocolversion": "14.1"}
    if authorization is not None:
        headers["authorization"] = authorization
    return admit(
        method,
        target,
        headers,
        autodiscover=autodiscover,
        bound=bound,
        policy=index or policy(),
        now=NOW,
        verify_bearer=verify_bearer,
    )


def sync(user: str, device: str) -> str:
    return f"{PATH}?Cmd=Sync&User={user}&DeviceId={device}&DeviceType=iPhone"


def test_a_blocked_user_cannot_borrow_another_users_compliant_device() -> None:
    # The attack: bob (blocked device, but the same holds for a blocked user)
    # names alice and her compliant device in the query.
    out = run(sync("alice", "alice-phone"), basic("bob"))
    assert isinstance(out, Blocked)
    assert out.facts.user == "bob" and out.decision.rule == "unknown_device"
    out = run(sync("alice", "alice-phone"), m.header("NTLM", m.authenticate("bob", "CORP")))
    assert isinstance(out, Blocked) and out.facts.user == "bob"
    out = run(sync("alice", "alice-phone"), bearer("bob@corp.example"))
    assert isinstance(out, Blocked) and out.facts.user == "bob"


def test_no_credentials_are_refused_not_decided_by_the_query_user() -> None:
    out = run(sync("alice", "alice-phone"))
    assert isinstance(out, Refused) and out.status == 401 and out.challenge
    assert out.rule == RULE_AUTH_REQUIRED


def test_a_connection_bound_by_ntlm_is_decided_as_its_user() -> None:
    out = run(sync("mallory", "alice-phone"), bound=Binding("CORP\\alice", True))
    assert isinstance(out, Admitted)
    assert out.facts.user == "alice" and out.identity.source is Source.CONNECTION


def test_device_only_admits_only_a_device_entry_of_the_query_user() -> None:
    kerberos = m.header("Negotiate", m.kerberos_ticket())
    index = policy(DEVICE_ONLY)
    out = run(sync("alice", "alice-phone"), kerberos, index=index)
    assert isinstance(out, Admitted) and out.identity.source is Source.UNVERIFIED
    out = run(
        sync("alice", "unknown-phone"),
        kerberos,
        index=policy(DEVICE_ONLY, unknown_device_action=Access.ALLOW),
    )
    assert isinstance(out, Blocked) and out.decision.rule == RULE_UNVERIFIABLE
    out = run(sync("mallory", "alice-phone"), kerberos, index=index)
    assert isinstance(out, Blocked) and out.decision.rule == RULE_UNVERIFIABLE
    out = run(f"{PATH}?User=alice", kerberos, method="OPTIONS", index=index)
    assert isinstance(out, Blocked) and out.decision.rule == RULE_UNVERIFIABLE
    out = run(PATH, kerberos, method="OPTIONS", index=index)  # no user to check at all
    assert isinstance(out, Refused) and out.rule == RULE_UNVERIFIABLE
    # Test mode does not let an unverifiable identity through.
    test_mode = policy(DEVICE_ONLY, test_mode=True)
    out = run(sync("mallory", "alice-phone"), kerberos, index=test_mode)
    assert isinstance(out, Blocked)


def test_a_handshake_leg_is_not_decided() -> None:
    out = run(sync("alice", "alice-phone"), m.header("NTLM", m.negotiate()))
    assert isinstance(out, HandshakeLeg) and out.facts.user == ""


@pytest.mark.parametrize(
    ("settings", "auth", "expected"),
    [
        ({}, basic("alice"), "autodiscover"),
        ({"blocked_users": ("CORP\\Alice",)}, basic("alice"), "user_block"),
        ({"unknown_device_action": Access.BLOCK}, basic("nobody-known"), "autodiscover"),
        ({}, None, RULE_AUTH_REQUIRED),
    ],
)
def test_autodiscover_is_decided_by_user(
    settings: dict[str, object], auth: str | None, expected: str
) -> None:
    out = run("/autodiscover/autodiscover.xml", auth, index=policy(**settings), autodiscover=True)
    rule = out.decision.rule if isinstance(out, Admitted | Blocked) else out.rule  # type: ignore[union-attr]
    assert rule == expected
    if isinstance(out, Blocked):
        assert out.response.status == 403  # Autodiscover has no WBXML status shape


def test_autodiscover_without_policy_fails_closed() -> None:
    out = run(
        "/autodiscover/autodiscover.xml",
        basic("alice"),
        index=PolicyIndex.empty(),
        autodiscover=True,
    )
    assert isinstance(out, Blocked) and out.decision.rule == "no_policy"
    assert out.response.status == 503


# --- the property ---------------------------------------------------------------------------

USERS = ["alice", "CORP\\alice", "alice@corp.example", "bob", "CORP\\Bob", "mallory", "ALICE"]
DEVICES = ["alice-phone", "ALICE-PHONE", "bob-phone", "other"]


@st.composite
def credentials(draw: st.DrawFn) -> tuple[str | None, Binding | None, str | None]:
    """(Authorization value, connection binding, the user the mail server authenticates:
    None when it authenticates no one the gateway can name)."""
    user = draw(st.sampled_from(USERS))
    kind = draw(
        st.sampled_from(
            [
                "basic",
                "ntlm",
                "negotiate-ntlm",
                "bearer",
                "bound",
                "none",
                "kerberos",
                "handshake",
                "other",
                "malformed",
            ]
        )
    )
    bound = draw(st.none() | st.builds(Binding, st.sampled_from(USERS), st.booleans()))
    if kind == "basic":
        return basic(user), bound, user
    if kind == "ntlm":
        return m.header("NTLM", m.authenticate(user)), bound, user
    if kind == "negotiate-ntlm":
        return m.header("Negotiate", m.spnego_response(m.authenticate(user))), bound, user
    if kind == "bearer":
        return bearer(user), bound, user
    if kind == "bound":
        binding = Binding(user, True)
        return None, binding, user
    if kind == "none":
        return None, bound, (bound.user if bound is not None and bound.verified else None)
    if kind == "kerberos":
        return m.header("Negotiate", m.kerberos_ticket()), bound, None
    if kind == "handshake":
        return m.header("NTLM", m.negotiate()), bound, None
    if kind == "other":
        return "Digest username=x", bound, None
    return "Basic\t" + base64.b64encode(f"{user}:pw".encode()).decode(), bound, None


@settings(max_examples=600, deadline=None)
@given(
    creds=credentials(),
    query_user=st.sampled_from(USERS),
    device=st.sampled_from(DEVICES),
    mode=st.sampled_from([REFUSE, DEVICE_ONLY]),
    unknown=st.sampled_from([Access.ALLOW, Access.BLOCK]),
    command=st.sampled_from(["Sync", "Ping", "Provision", "OPTIONS"]),
)
def test_no_request_is_admitted_for_a_user_other_than_the_authenticated_one(
    creds: tuple[str | None, Binding | None, str | None],
    query_user: str,
    device: str,
    mode: UnverifiableIdentity,
    unknown: Access,
    command: str,
) -> None:
    authorization, bound, authenticated = creds
    index = policy(mode, unknown_device_action=unknown)
    if command == "OPTIONS":
        out = run(
            f"{PATH}?User={query_user}", authorization, method="OPTIONS", bound=bound, index=index
        )
    else:
        target = f"{PATH}?Cmd={command}&User={query_user}&DeviceId={device}&DeviceType=iPhone"
        out = run(target, authorization, bound=bound, index=index)
    if isinstance(out, Admitted):
        if out.identity.source is Source.UNVERIFIED:
            # device_only, and only on a device entry of the very user the query names.
            assert mode is DEVICE_ONLY and authenticated is None
            assert index.entry(normalize_user(query_user), out.facts.device_id) is not None
            assert out.facts.user == normalize_user(query_user)
        else:
            assert authenticated is not None
            assert out.facts.user == normalize_user(authenticated)
    elif isinstance(out, HandshakeLeg):
        assert authorization is not None and "NTLM" in authorization
        assert out.facts.user == ""
