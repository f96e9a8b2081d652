"""Bearer verification (``core.bearer``): one row per check a token must pass."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from onprem_gateway.core.bearer import CLOCK_SKEW_S, BearerError, BearerVerifier
from seg_contract import Jwk
from tests.support.tokens import AUDIENCE, Issuer

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def rsa_issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def ec_issuer() -> Issuer:
    return Issuer(issuer="https://adfs.corp.example/adfs", kid="ec-1", kind="EC")


def test_a_valid_token_names_its_user(rsa_issuer: Issuer, ec_issuer: Issuer) -> None:
    verifier = BearerVerifier(
        (rsa_issuer.contract(), ec_issuer.contract(user_claim="preferred_username"))
    )
    claims = verifier.verify(rsa_issuer.token("alice@corp.example", now=NOW), NOW)
    assert claims.user == "alice@corp.example"
    assert claims.expires_at == int(NOW + 3600)
    token = ec_issuer.token(upn=None, now=NOW, preferred_username="CORP\\bob")
    assert verifier.verify(token, NOW).user == "CORP\\bob"


def _unsigned(issuer: Issuer, alg: str) -> str:
    header = {"alg": alg, "kid": issuer.kid, "typ": "JWT"}
    payload = {"iss": issuer.issuer, "aud": AUDIENCE, "exp": NOW + 60, "upn": "mallory"}

    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


REFUSED = [
    ("expired", lambda i: i.token(now=NOW - 7200), "expired"),
    ("expired beyond the skew", lambda i: i.token(now=NOW - 3600 - CLOCK_SKEW_S - 5), "expired"),
    ("not yet valid", lambda i: i.token(now=NOW + 600, nbf=int(NOW + 600)), "not valid yet"),
    ("other audience", lambda i: i.token(now=NOW, aud="https://other.example/"), "audience"),
    ("no exp", lambda i: i.token(now=NOW, exp=None), "refused"),
    ("no user claim", lambda i: i.token(upn=None, now=NOW), "no 'upn' claim"),
    ("unknown issuer", lambda i: Issuer(issuer="https://evil.example").token(now=NOW), "issuer"),
    ("unknown key", lambda i: i.token(now=NOW, headers={"kid": "other"}), "does not hold"),
    ("alg none", lambda i: _unsigned(i, "none"), "algorithm"),
    ("HMAC with the public key", lambda i: _unsigned(i, "HS256"), "algorithm"),
    ("not a JWT", lambda i: "abc.def", "not a JWT"),
]


@pytest.mark.parametrize(("case", "make", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_tokens(rsa_issuer: Issuer, case: str, make: object, reason: str) -> None:
    verifier = BearerVerifier((rsa_issuer.contract(),))
    token = make(rsa_issuer)  # type: ignore[operator]
    with pytest.raises(BearerError) as caught:
        verifier.verify(token, NOW)
    assert reason in caught.value.reason
    assert token not in caught.value.reason


def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(rsa_issuer: Issuer) -> None:
    impostor = Issuer(kid=rsa_issuer.kid)  # same issuer name and kid, different key
    verifier = BearerVerifier((rsa_issuer.contract(),))
    with pytest.raises(BearerError, match="signature"):
        verifier.verify(impostor.token(now=NOW), NOW)


def test_the_skew_is_small_and_symmetric(rsa_issuer: Issuer) -> None:
    verifier = BearerVerifier((rsa_issuer.contract(),))
    token = rsa_issuer.token(now=NOW, lifetime_s=60)
    assert verifier.verify(token, NOW + 60 + CLOCK_SKEW_S - 1).user
    with pytest.raises(BearerError):
        verifier.verify(token, NOW + 60 + CLOCK_SKEW_S + 1)


def test_no_issuer_configured_refuses_every_token(rsa_issuer: Issuer) -> None:
    verifier = BearerVerifier(())
    assert not verifier.configured
    with pytest.raises(BearerError, match="no issuer"):
        verifier.verify(rsa_issuer.token(now=NOW), NOW)


def test_keys_without_kid_work_when_the_issuer_has_one(rsa_issuer: Issuer) -> None:
    jwk = {k: v for k, v in rsa_issuer.jwk().items() if k != "kid"}
    verifier = BearerVerifier((rsa_issuer.contract(keys=(Jwk(**jwk),)),))
    token = jwt.encode(
        {"iss": rsa_issuer.issuer, "aud": AUDIENCE, "exp": NOW + 60, "upn": "carol"},
        rsa_issuer._key,
        algorithm="RS256",
    )
    assert verifier.verify(token, NOW).user == "carol"


def test_an_unusable_key_is_reported_not_fatal(rsa_issuer: Issuer) -> None:
    broken = Jwk(kty="RSA", kid="bad", n="AQAB", e="AQAB")
    verifier = BearerVerifier((rsa_issuer.contract(keys=(broken, *rsa_issuer.contract().keys)),))
    assert verifier.verify(rsa_issuer.token(now=NOW), NOW).user
    (problem,) = verifier.problems
    assert "'bad'" in problem and rsa_issuer.issuer in problem


def test_jwk_contract_refuses_private_members_and_incomplete_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        Jwk(kty="RSA", n="x", e="AQAB", d="secret")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="without"):
        Jwk(kty="EC", crv="P-256", x="x")
