"""Policy signing with asymmetric KMS keys (ECC_NIST_P256, SIGN_VERIFY).

``Sign`` gets the statement itself (``MessageType=RAW``, ``ECDSA_SHA_256``): a statement
is a few hundred bytes and already holds the payload's SHA-256, so a snapshot never goes
to KMS; RAW rather than DIGEST because moto 5.2 ignores ``MessageType`` (it would hash a
digest again), and the local runtime must run this very code. The private key never
leaves KMS. The public key is read once per warm container (``GetPublicKey``) and
checked to be a P-256 signing key before anything is signed with it.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import SigningUnavailable
from seg_contract.signing import TrustedKey

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

KEY_SPEC = "ECC_NIST_P256"
KEY_USAGE = "SIGN_VERIFY"
ALGORITHM: Final[Literal["ECDSA_SHA_256"]] = "ECDSA_SHA_256"
MAX_MESSAGE_BYTES = 4096  # KMS's limit for MessageType=RAW


def _failure(action: str, key_arn: str, exc: Exception) -> SigningUnavailable:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    suffix = f" ({code})" if code else ""
    return SigningUnavailable(f"policy signing key {key_arn}: {action} failed{suffix}")


class KmsPolicySigner:
    """One KMS key; implements ``lambdas.ports.PolicySigner``."""

    def __init__(self, key_arn: str, client: KMSClient | None = None) -> None:
        self._arn = key_arn
        self._client: KMSClient = client or boto3.client("kms")

    @property
    def key_arn(self) -> str:
        return self._arn

    @cached_property
    def _public(self) -> TrustedKey:
        try:
            answer = self._client.get_public_key(KeyId=self._arn)
        except (ClientError, BotoCoreError) as exc:
            raise _failure("GetPublicKey", self._arn, exc) from exc
        spec = answer.get("KeySpec") or answer.get("CustomerMasterKeySpec")
        if spec != KEY_SPEC or answer.get("KeyUsage") != KEY_USAGE:
            raise SigningUnavailable(
                f"policy signing key {self._arn} is {spec}/{answer.get('KeyUsage')}, "
                f"not {KEY_SPEC}/{KEY_USAGE}"
            )
        try:
            return TrustedKey.from_der(answer["PublicKey"])
        except ValueError as exc:
            raise SigningUnavailable(f"policy signing key {self._arn}: {exc}") from None

    @property
    def kid(self) -> str:
        return self._public.kid

    @property
    def public_key_der(self) -> bytes:
        return self._public.spki_der

    def sign(self, message: bytes) -> bytes:
        if len(message) > MAX_MESSAGE_BYTES:
            raise SigningUnavailable(f"a statement of {len(message)} bytes is too long to sign")
        self._public  # noqa: B018 - never sign with a key that is not what it must be
        try:
            answer = self._client.sign(
                KeyId=self._arn,
                Message=message,
                MessageType="RAW",
                SigningAlgorithm=ALGORITHM,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _failure("Sign", self._arn, exc) from exc
        return bytes(answer["Signature"])


class KmsPolicySigners:
    """A ``KmsPolicySigner`` per key ARN, kept while the container is warm (so each
    key's public key is read once); implements ``lambdas.ports.PolicySigners``."""

    def __init__(self, client: KMSClient | None = None) -> None:
        self._client = client
        self._signers: dict[str, KmsPolicySigner] = {}

    @cached_property
    def _kms(self) -> KMSClient:
        return self._client or boto3.client("kms")

    def signer(self, key_arn: str) -> KmsPolicySigner:
        found = self._signers.get(key_arn)
        if found is None:
            found = self._signers[key_arn] = KmsPolicySigner(key_arn, self._kms)
        found.kid  # noqa: B018 - read and check the public key now, not mid-signature
        return found
