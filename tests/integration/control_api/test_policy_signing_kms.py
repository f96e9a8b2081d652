"""Policy signing on moto's KMS and DynamoDB: the KMS adapter, the key registry, the
console's rotation routes and the signed key set gateways learn keys from."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from lambdas import resources
from lambdas.adapters.dynamodb_signing_keys import DynamoDbSigningKeys
from lambdas.adapters.kms_policy_signer import KmsPolicySigner, KmsPolicySigners
from lambdas.api.app import create_app
from lambdas.api.deps import Container
from lambdas.domain.errors import Conflict, SigningUnavailable
from lambdas.domain.signing_keys import bootstrap
from lambdas.usecases.policy_signing import epoch_ms
from seg_contract.http import SIGNING_KEYS_PATH
from seg_contract.key_ring import KeyRing
from seg_contract.signing import (
    Applied,
    Kind,
    RejectReason,
    SignatureRejected,
    SignedPayload,
    Verifier,
    issue,
    load_public_key,
)
from tests.integration.control_api.conftest import Ctx, register
from tests.support.aws import REGION, AwsEnv

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_key(kms: Any, spec: str = "ECC_NIST_P256", usage: str = "SIGN_VERIFY") -> str:
    return str(kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["Arn"])


@pytest.fixture
def kms(env: AwsEnv) -> Any:
    return boto3.client("kms", region_name=REGION)


class CountingKms:
    """The moto client, counting calls by operation."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(**kwargs)

        return call


# --- the KMS adapter ------------------------------------------------------------------------


def test_kms_signatures_verify_as_the_gateway_verifies_them(kms: Any) -> None:
    arn = new_key(kms)
    counting = CountingKms(kms)
    signer = KmsPolicySigner(arn, counting)  # type: ignore[arg-type]
    signed = [
        issue(
            signer,
            cluster_id="c-0123456789",
            kind=Kind.CHANGE,
            version=v,
            payload=b'{"type":"change"}',
            issued_at_ms=epoch_ms(NOW),
        )
        for v in (1, 2, 3)
    ]
    verifier = Verifier([load_public_key(_b64(kms.get_public_key(KeyId=arn)["PublicKey"]))])
    for item in signed:
        verified = verifier.verify(
            item,
            cluster_id="c-0123456789",
            kinds=Kind.CHANGE,
            applied=Applied(),
            now_ms=epoch_ms(NOW),
        )
        assert verified.statement.kid == signer.kid
    # The public key is read once per warm container; each statement is one Sign.
    assert counting.calls == {"get_public_key": 1, "sign": 3}


def test_a_key_that_is_not_ecc_p256_signing_is_never_used(kms: Any) -> None:
    for arn in (
        new_key(kms, spec="RSA_2048"),
        new_key(kms, spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT"),
    ):
        with pytest.raises(SigningUnavailable, match=r"not ECC_NIST_P256/SIGN_VERIFY"):
            KmsPolicySigner(arn, kms).sign(b"statement")


def test_kms_errors_become_signing_unavailable_without_leaking_botocore(kms: Any) -> None:
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    with pytest.raises(SigningUnavailable, match=r"GetPublicKey failed \(NotFoundException\)"):
        KmsPolicySigners(kms).signer(missing)
    arn = new_key(kms)

    class Throttled(CountingKms):
        def sign(self, **kwargs: Any) -> Any:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "Sign")  # what KMS answers above its request quota

    signer = KmsPolicySigner(arn, Throttled(kms))  # type: ignore[arg-type]
    with pytest.raises(SigningUnavailable, match=r"Sign failed \(ThrottlingException\)"):
        signer.sign(b"statement")
    with pytest.raises(SigningUnavailable, match="too long"):
        signer.sign(b"x" * 4097)


# --- the registry adapter --------------------------------------------------------------------


def test_the_registry_round_trips_and_refuses_a_stale_write(env: AwsEnv) -> None:
    store = DynamoDbSigningKeys(env.tables["clusters"], env.dynamodb)
    assert store.get_registry().generation == 0
    first = bootstrap("a" * 24, "arn:aws:kms:us-east-1:123456789012:key/a", "pub", NOW)
    store.put_registry(first, 0)
    assert store.get_registry() == first
    with pytest.raises(Conflict):
        store.put_registry(first, 0)  # someone created it meanwhile
    nxt = first.register("b" * 24, "arn:aws:kms:us-east-1:123456789012:key/b", "pub-b", NOW)
    store.put_registry(nxt, 1)
    assert store.get_registry() == nxt
    with pytest.raises(Conflict):
        store.put_registry(nxt.activate("b" * 24, NOW), 1)


def test_the_registry_item_is_not_a_cluster(ctx: Ctx, env: AwsEnv) -> None:
    store = DynamoDbSigningKeys(env.tables["clusters"], env.dynamodb)
    store.put_registry(bootstrap("a" * 24, "arn:aws:kms:us-east-1:1:key/a", "pub", NOW), 0)
    cluster_id, _ = register(ctx, "hq")
    listed = ctx.client.get("/console/v1/clusters", headers=ctx.admin()).json()
    assert [c["cluster_id"] for c in listed] == [cluster_id]


# --- routes -----------------------------------------------------------------------------------


@pytest.fixture
def keys(kms: Any) -> tuple[str, str]:
    return new_key(kms), new_key(kms)


@pytest.fixture
def signing_ctx(
    env: AwsEnv, kms: Any, keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ctx]:
    env.env[resources.ENV_POLICY_SIGNING_KEY_ARNS] = ",".join(keys)
    container = Container(
        env.settings, dynamodb=env.dynamodb, sqs=env.sqs, apigw=env.apigw, kms=kms
    )
    with TestClient(create_app(container=container)) as client:
        yield Ctx(env, client)


def _pub(kms: Any, arn: str) -> str:
    return _b64(kms.get_public_key(KeyId=arn)["PublicKey"])


def _key_set(ctx: Ctx, credential: str) -> SignedPayload:
    r = ctx.client.get(SIGNING_KEYS_PATH, headers=ctx.gw(credential))
    assert r.status_code == 200, r.text
    return SignedPayload.from_headers(r.headers, r.content)


def test_rotation_through_the_console_while_a_node_follows_the_key_set(
    signing_ctx: Ctx, kms: Any, keys: tuple[str, str]
) -> None:
    ctx = signing_ctx
    one, two = keys
    cluster_id, credential = register(ctx, "hq")
    listed = ctx.client.get("/console/v1/signing-keys", headers=ctx.admin()).json()
    assert listed["recorded"] is False
    assert [(k["state"], k["key_arn"]) for k in listed["keys"]] == [("active", one)]
    assert listed["trusted"] == [_pub(kms, one)]

    # The node pins what `seg cluster register` printed and follows the key set.
    ring = KeyRing(pinned=(load_public_key(listed["trusted"][0]),))
    now_ms = int(datetime.now(UTC).timestamp() * 1000)

    def follow() -> KeyRing:
        learned, _ = ring.learn(_key_set(ctx, credential), cluster_id=cluster_id, now_ms=now_ms)
        return learned

    ring = follow()
    r = ctx.client.post("/console/v1/signing-keys", json={"key_arn": two}, headers=ctx.admin())
    assert r.status_code == 201, r.text
    kid_two = next(k["kid"] for k in r.json()["keys"] if k["key_arn"] == two)
    kid_one = next(k["kid"] for k in r.json()["keys"] if k["key_arn"] == one)
    assert r.json()["recorded"] is True
    ring = follow()
    assert {k.kid for k in ring.trusted()} == {kid_one, kid_two}

    r = ctx.client.post(f"/console/v1/signing-keys/{kid_two}/activate", headers=ctx.admin())
    assert r.status_code == 200, r.text
    key_set = _key_set(ctx, credential)
    assert key_set.statement().kid == kid_two
    ring = follow()

    r = ctx.client.post(f"/console/v1/signing-keys/{kid_one}/retire", headers=ctx.admin())
    assert r.status_code == 200, r.text
    assert r.json()["trusted"] == [_pub(kms, two)]
    ring = follow()
    assert [k.kid for k in ring.learned] == [kid_two]
    # Each step is in the audit trail, naming the admin and the key.
    trail = ctx.client.get(
        "/console/v1/audit", params={"action": "signing_key."}, headers=ctx.viewer()
    ).json()["items"]
    assert [(r["action"], r["actor"], r["target"]) for r in trail] == [
        ("signing_key.retire", "admin", kid_one),
        ("signing_key.activate", "admin", kid_two),
        ("signing_key.register", "admin", two),
    ]
    assert trail[0]["after"] == {kid_one: "retired", kid_two: "active"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        (
            "POST",
            "/console/v1/signing-keys",
            {"key_arn": "arn:aws:kms:us-east-1:123456789012:key/zz"},
            422,
            "not one of this stack's",
        ),
        ("POST", "/console/v1/signing-keys", {"key_arn": "x", "extra": 1}, 422, "key_arn"),
        ("POST", "/console/v1/signing-keys/nothex/activate", None, 422, "kid"),
        ("POST", f"/console/v1/signing-keys/{'f' * 24}/activate", None, 409, "no key"),
    ],
)
def test_bad_rotation_requests_get_a_clear_error(
    signing_ctx: Ctx,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    detail: str,
) -> None:
    r = signing_ctx.client.request(method, path, json=body, headers=signing_ctx.admin())
    assert r.status_code == status, r.text
    assert detail in r.text


def test_retiring_the_active_key_is_refused(signing_ctx: Ctx) -> None:
    listed = signing_ctx.client.get("/console/v1/signing-keys", headers=signing_ctx.admin())
    kid = listed.json()["keys"][0]["kid"]
    r = signing_ctx.client.post(
        f"/console/v1/signing-keys/{kid}/retire", headers=signing_ctx.admin()
    )
    assert r.status_code == 409
    assert "is active" in r.json()["detail"]


def test_rotation_routes_need_a_console_admin(signing_ctx: Ctx) -> None:
    _, credential = register(signing_ctx, "hq")
    for headers in ({}, signing_ctx.gw(credential)):
        r = signing_ctx.client.get("/console/v1/signing-keys", headers=headers)
        assert r.status_code in (401, 403)
    assert signing_ctx.client.get(SIGNING_KEYS_PATH).status_code == 401


def test_a_gateway_gets_its_own_clusters_key_set_only(signing_ctx: Ctx, kms: Any) -> None:
    a, credential_a = register(signing_ctx, "a")
    b, _ = register(signing_ctx, "b")
    signed = _key_set(signing_ctx, credential_a)
    listed = signing_ctx.client.get("/console/v1/signing-keys", headers=signing_ctx.admin())
    ring = KeyRing(pinned=(load_public_key(listed.json()["trusted"][0]),))
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    ring.learn(signed, cluster_id=a, now_ms=now_ms)
    with pytest.raises(SignatureRejected) as caught:
        ring.learn(signed, cluster_id=b, now_ms=now_ms)
    assert caught.value.reason is RejectReason.WRONG_CLUSTER


@pytest.fixture
def keyless_ctx(env: AwsEnv) -> Iterator[Ctx]:
    """A deployment whose functions have no policy signing key configured."""
    env.env.pop(resources.ENV_POLICY_SIGNING_KEY_ARNS)
    container = Container(env.settings, dynamodb=env.dynamodb, sqs=env.sqs, apigw=env.apigw)
    with TestClient(create_app(container=container)) as client:
        yield Ctx(env, client)


def test_without_a_signing_key_nothing_is_answered_unsigned(keyless_ctx: Ctx) -> None:
    ctx = keyless_ctx
    _, credential = register(ctx, "hq")
    for path in ("/gateway/v1/policy", "/gateway/v1/policy/delta?since=0"):
        r = ctx.client.get(path, headers=ctx.gw(credential))
        assert r.status_code == 503, path
        assert "SEG_POLICY_SIGNING_KEY_ARNS" in r.json()["detail"]
        assert "X-SEG-Policy-Statement" not in r.headers
    r = ctx.client.get(SIGNING_KEYS_PATH, headers=ctx.gw(credential))
    assert r.status_code == 503
    assert "SEG_POLICY_SIGNING_KEY_ARNS" in r.json()["detail"]
    r = ctx.client.get("/console/v1/signing-keys", headers=ctx.admin())
    assert r.status_code == 503
