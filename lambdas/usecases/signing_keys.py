"""Rotate the policy signing key from the console (``seg cluster rotate-signing-key``).

The keys are created by the CDK app (an admin adds one to the context ``signing_keys``
and redeploys); these use cases only move them through the registry's states
(``lambdas.domain.signing_keys``): register the new key as *next* (nodes learn it from
the key set signed by the active key), *activate* it once every node trusts it, and
*retire* the old one once every node holds policy signed by the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lambdas.domain.errors import Conflict, InvalidInput
from lambdas.domain.signing_keys import KeyRegistry, RegistryConflict
from lambdas.ports import SigningKeyStore
from lambdas.usecases.policy_signing import PolicySigning, public_key_b64


def list_signing_keys(
    *, signing: PolicySigning, store: SigningKeyStore, now: datetime
) -> tuple[KeyRegistry, bool]:
    """The registry and whether it is stored (False: no rotation yet, so the stack's
    first key is the active one by default)."""
    stored = store.get_registry()
    if stored.generation:
        return stored, True
    return signing.bootstrapped(now), False


def _change(
    signing: PolicySigning,
    store: SigningKeyStore,
    now: datetime,
    transition: Callable[[KeyRegistry], KeyRegistry],
) -> KeyRegistry:
    current, stored = list_signing_keys(signing=signing, store=store, now=now)
    try:
        changed = transition(current)
    except RegistryConflict as exc:
        raise Conflict(str(exc)) from None
    store.put_registry(changed, current.generation if stored else 0)
    signing.forget()
    return changed


def register_signing_key(
    key_arn: str, *, signing: PolicySigning, store: SigningKeyStore, now: datetime
) -> KeyRegistry:
    """Announce one of the stack's keys as the next signing key."""
    if key_arn not in signing.key_arns:
        listed = ", ".join(signing.key_arns) or "none"
        raise InvalidInput(
            f"{key_arn} is not one of this stack's policy signing keys ({listed}); add it "
            "to the CDK context signing_keys and redeploy first"
        )
    signer = signing.signer(key_arn)
    public = public_key_b64(signer)
    return _change(signing, store, now, lambda r: r.register(signer.kid, key_arn, public, now))


def activate_signing_key(
    kid: str, *, signing: PolicySigning, store: SigningKeyStore, now: datetime
) -> KeyRegistry:
    """Sign with the next key from now on (every warm function within a minute)."""
    return _change(signing, store, now, lambda r: r.activate(kid, now))


def retire_signing_key(
    kid: str, *, signing: PolicySigning, store: SigningKeyStore, now: datetime
) -> KeyRegistry:
    """Stop announcing a previous (or abandoned next) key: nodes stop trusting it."""
    return _change(signing, store, now, lambda r: r.retire(kid, now))
