"""The registry of policy signing keys and its rotation rules (pure).

The keys themselves are asymmetric KMS keys the CDK app creates (``cdk/signing.py``);
the functions that emit policy may sign only with the keys the stack lists in
``SEG_POLICY_SIGNING_KEY_ARNS``. The registry says which of them does what, so a
rotation needs no redeploy of the functions and never has a moment where a node
receives policy signed by a key it does not trust yet.

Theory of operation: each key moves through these states, one transition per console
call, each a new *generation* of the registry (the version of the ``SigningKeySet``
nodes learn, so an older set is a replay they refuse):

=========  =============  ===========================================================
from       action         to (and why)
=========  =============  ===========================================================
(none)     register       next: announced to nodes in the key set signed by the
                          active key; nothing is signed with it yet
next       activate       active: the control plane signs with it from now on; the
                          old active key becomes *previous*
active     activate(new)  previous: no longer used, still trusted by nodes, because
                          their stored policy may have been signed with it
previous   retire         retired: leaves the key set, nodes stop trusting it
next       retire         retired: a rotation abandoned before activation
active     retire         refused: policy must always have a signing key
=========  =============  ===========================================================

At most one key is next and one previous, so nodes trust at most three keys; a second
rotation starts only once the previous key is retired. A fresh stack has no registry
yet: the first configured key is the active one (``bootstrap``), and the first change
writes that down.

May import only ``seg_contract``, pydantic and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class KeyState(StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    PREVIOUS = "previous"
    RETIRED = "retired"


TRUSTED_STATES = (KeyState.ACTIVE, KeyState.NEXT, KeyState.PREVIOUS)


class RegistryConflict(ValueError):
    """The transition is not allowed from the registry's current state (why is in the
    message, with what to do instead)."""


@dataclass(frozen=True)
class SigningKeyRecord:
    kid: str
    key_arn: str
    public_key: str  # base64 DER SubjectPublicKeyInfo
    state: KeyState
    created_at: datetime
    changed_at: datetime


@dataclass(frozen=True)
class KeyRegistry:
    """Every key the registry knows (retired ones included, for the record) and its
    generation (0: never written)."""

    generation: int = 0
    keys: tuple[SigningKeyRecord, ...] = ()

    def find(self, kid: str) -> SigningKeyRecord | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def in_state(self, state: KeyState) -> SigningKeyRecord | None:
        return next((k for k in self.keys if k.state is state), None)

    @property
    def active(self) -> SigningKeyRecord | None:
        return self.in_state(KeyState.ACTIVE)

    @property
    def trusted(self) -> tuple[SigningKeyRecord, ...]:
        """What nodes must trust: active first, then next, then previous."""
        return tuple(k for state in TRUSTED_STATES for k in self.keys if k.state is state)

    def _with(self, *changed: SigningKeyRecord) -> KeyRegistry:
        by_kid = {k.kid: k for k in self.keys}
        order = [k.kid for k in self.keys]
        for record in changed:
            if record.kid not in by_kid:
                order.append(record.kid)
            by_kid[record.kid] = record
        return KeyRegistry(self.generation + 1, tuple(by_kid[kid] for kid in order))

    # --- transitions -------------------------------------------------------------------

    def register(self, kid: str, key_arn: str, public_key: str, at: datetime) -> KeyRegistry:
        if self.active is None:
            raise RegistryConflict("the registry has no active key to announce a next one with")
        known = self.find(kid)
        if known is not None or any(k.key_arn == key_arn for k in self.keys):
            state = known.state.value if known else "known"
            raise RegistryConflict(f"key {kid} is already registered ({state})")
        pending = self.in_state(KeyState.NEXT)
        if pending is not None:
            raise RegistryConflict(
                f"key {pending.kid} is already next: activate or retire it first"
            )
        previous = self.in_state(KeyState.PREVIOUS)
        if previous is not None:
            raise RegistryConflict(
                f"key {previous.kid} from the last rotation is still trusted: retire it first"
            )
        return self._with(SigningKeyRecord(kid, key_arn, public_key, KeyState.NEXT, at, at))

    def activate(self, kid: str, at: datetime) -> KeyRegistry:
        record = self._require(kid)
        if record.state is not KeyState.NEXT:
            raise RegistryConflict(f"key {kid} is {record.state.value}; only a next key activates")
        old = self.active
        changed = [replace(record, state=KeyState.ACTIVE, changed_at=at)]
        if old is not None:
            changed.append(replace(old, state=KeyState.PREVIOUS, changed_at=at))
        return self._with(*changed)

    def retire(self, kid: str, at: datetime) -> KeyRegistry:
        record = self._require(kid)
        if record.state is KeyState.ACTIVE:
            raise RegistryConflict(
                f"key {kid} is active: register and activate its successor before retiring it"
            )
        if record.state is KeyState.RETIRED:
            raise RegistryConflict(f"key {kid} is retired already")
        return self._with(replace(record, state=KeyState.RETIRED, changed_at=at))

    def _require(self, kid: str) -> SigningKeyRecord:
        record = self.find(kid)
        if record is None:
            raise RegistryConflict(f"no key {kid} in the registry")
        return record


def bootstrap(kid: str, key_arn: str, public_key: str, at: datetime) -> KeyRegistry:
    """The registry of a stack that never rotated: its first configured key, active
    (generation 1, the key set version nodes see first)."""
    return KeyRegistry(1, (SigningKeyRecord(kid, key_arn, public_key, KeyState.ACTIVE, at, at),))
