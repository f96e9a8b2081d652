"""The local runtime's policy signing key: an ECC_NIST_P256 signing key in moto's KMS,
as the CDK app creates one in AWS, so the control plane signs through the same KMS
adapter (``lambdas.adapters.kms_policy_signer``) here as in a deployment.

The key is found again by its alias when the control plane restarts against the same
moto server, so the public key the nodes pinned stays valid. A local runtime may have
more than one (``serve --signing-keys 2``), as a stack does during a rotation: key ``n``
has the alias ``alias/<prefix>-policy-signing-<n>`` (the first keeps the plain alias).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from seg_contract.signing import TrustedKey


@dataclass(frozen=True)
class SigningKey:
    arn: str
    public_key: str  # base64 DER SubjectPublicKeyInfo: what a node pins

    @property
    def kid(self) -> str:
        return TrustedKey.from_der(base64.b64decode(self.public_key)).kid


def alias_name(prefix: str, number: int = 1) -> str:
    suffix = "" if number == 1 else f"-{number}"
    return f"alias/{prefix}-policy-signing{suffix}"


def provision_signing_key(kms: Any, prefix: str, number: int = 1) -> SigningKey:
    """The key behind ``alias_name(prefix, number)``, created on first use."""
    alias = alias_name(prefix, number)
    try:
        arn = kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except kms.exceptions.NotFoundException:
        metadata = kms.create_key(
            KeySpec="ECC_NIST_P256",
            KeyUsage="SIGN_VERIFY",
            Description="Secure Email Gateway (local): signs gateway policy",
        )["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
        arn = metadata["Arn"]
    public = kms.get_public_key(KeyId=arn)["PublicKey"]
    return SigningKey(arn=str(arn), public_key=base64.b64encode(public).decode("ascii"))
