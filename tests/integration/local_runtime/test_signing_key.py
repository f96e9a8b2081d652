"""The local runtime's policy signing key: created in moto's KMS at start, named to the
handlers through the same variable as in AWS, and found again after a restart."""

from __future__ import annotations

import boto3

from lambdas import resources
from lambdas.adapters.kms_policy_signer import KmsPolicySigner
from lambdas.settings import parse_settings
from seg_contract.signing import Applied, Kind, Verifier, issue, load_public_key
from seg_local.signing_key import provision_signing_key

from .conftest import Runtime


def test_the_signing_key_is_an_ecc_p256_key_in_kms_named_in_the_environment(
    runtime: Runtime,
) -> None:
    cp = runtime.cp
    assert cp.endpoints is not None and cp.signing_key is not None
    settings = parse_settings(cp.env)
    assert settings.policy_signing_key_arns == (cp.signing_key.arn,)
    assert cp.env[resources.ENV_POLICY_SIGNING_KEY_ARNS] == cp.signing_key.arn
    assert cp.endpoints.public()["policy_signing_keys"] == [cp.signing_key.public_key]
    for name, value in resources.OBSERVABILITY_ENV.items():
        assert cp.env[name] == value

    kms = boto3.client("kms", endpoint_url=cp.endpoints.moto_endpoint, region_name="us-east-1")
    metadata = kms.describe_key(KeyId=cp.signing_key.arn)["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")

    # The Lambda code's own adapter signs there; the pinned public key verifies it.
    signer = KmsPolicySigner(cp.signing_key.arn, kms)
    signed = issue(
        signer, cluster_id="c-1", kind=Kind.CONFIRM, version=1, payload=b"", issued_at_ms=1000
    )
    pinned = load_public_key(cp.signing_key.public_key)
    assert pinned.kid == cp.signing_key.kid == signer.kid
    Verifier([pinned]).verify(
        signed, cluster_id="c-1", kinds=Kind.CONFIRM, applied=Applied(), now_ms=1000
    )

    # A restarted control plane against the same moto finds the same key.
    assert provision_signing_key(kms, cp.options.prefix) == cp.signing_key
