"""The policy signing keys: one asymmetric KMS key (ECC_NIST_P256, SIGN_VERIFY) per
label in the context ``signing_keys`` (default ``1``).

The private keys never leave KMS. Only the functions declared with ``signs_policy`` in
``lambdas/resources.py`` may use them, and only for ``kms:Sign`` and
``kms:GetPublicKey`` (a grant on these keys' ARNs in each function's role; the key
policy only keeps the account's administrators, as KMS requires). Those functions get
the keys' ARNs in ``SEG_POLICY_SIGNING_KEY_ARNS``: the first is the active key until the
console's signing-key registry says otherwise.

A rotation (README, "Signed policy"): deploy with a second label
(``-c signing_keys=1,2``), register, activate and retire in the console, then deploy
without the old label; its key is then scheduled for deletion after 30 days (kept,
with ``retain_data``).
"""

from __future__ import annotations

from aws_cdk import Duration, Fn, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from lambdas import resources

SIGN_ACTIONS = ("kms:Sign", "kms:GetPublicKey")


class PolicySigningKeys(Construct):
    """``keys`` maps each label to its key; ``key_arns`` is their comma-joined ARNs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        labels: tuple[str, ...],
        retain_data: bool,
        functions: dict[str, lambda_.Function],
    ) -> None:
        super().__init__(scope, construct_id)
        self.keys: dict[str, kms.Key] = {
            label: kms.Key(
                self,
                f"Key{label}",
                description=f"Secure Email Gateway: signs gateway policy (key {label})",
                key_spec=kms.KeySpec.ECC_NIST_P256,
                key_usage=kms.KeyUsage.SIGN_VERIFY,
                pending_window=Duration.days(30),
                removal_policy=RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY,
            )
            for label in labels
        }
        self.key_arns = Fn.join(",", [key.key_arn for key in self.keys.values()])
        for declared in resources.FUNCTIONS:
            if not declared.signs_policy:
                continue
            function = functions[declared.id]
            function.add_environment(resources.ENV_POLICY_SIGNING_KEY_ARNS, self.key_arns)
            for key in self.keys.values():
                key.grant(function, *SIGN_ACTIONS)
