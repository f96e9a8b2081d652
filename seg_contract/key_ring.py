"""Which policy signing keys a gateway trusts, and how it learns new ones while keys
rotate (see ``seg_contract.signing`` for what is signed).

A node trusts two kinds of keys:

- *pinned* keys, from its configuration (``policy_signing_keys``): the operator's
  decision, trusted until the configuration changes;
- *learned* keys, from the control plane's ``SigningKeySet`` (``GET
  /gateway/v1/signing-keys``, kind ``keys``), accepted only when the set verifies with a
  key the node already trusts and is newer than the set it holds. The newest verified
  set replaces the learned keys: a key the control plane retired disappears from it.

A rotation therefore never needs the nodes' configuration: the control plane announces
the next key in a set signed by the current one (state ``next``), later activates it
(signs with it; the old key becomes ``previous``, still trusted so stored policy signed
with it still verifies), and finally retires the old key (it leaves the set).

A node stores each set it accepts exactly as received and, at start, replays them in
order through ``KeyRing.learn`` with ``live=False``: a chain from its pins to the newest
set, each link signed by a key the previous links (or the pins) vouch for.

This module may import only the standard library, pydantic and ``seg_contract``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seg_contract.signing import (
    DEFAULT_MAX_AGE_MS,
    DEFAULT_MAX_SKEW_MS,
    Applied,
    Kind,
    RejectReason,
    SignatureRejected,
    SignedPayload,
    TrustedKey,
    Verified,
    Verifier,
    load_public_key,
)

MAX_ANNOUNCED_KEYS = 8


class AnnouncedState(StrEnum):
    ACTIVE = "active"  # the control plane signs with it
    NEXT = "next"  # announced ahead of activation: trust it from now on
    PREVIOUS = "previous"  # signed before the last activation: still trusted


class AnnouncedKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kid: Annotated[str, Field(pattern=r"^[0-9a-f]{24}$")]
    public_key: Annotated[str, Field(min_length=1, max_length=1024)]  # base64 DER SPKI
    state: AnnouncedState

    def trusted(self) -> TrustedKey:
        key = load_public_key(self.public_key)
        if key.kid != self.kid:
            raise ValueError(f"kid {self.kid} is not the fingerprint of its public key")
        return key


class SigningKeySet(BaseModel):
    """The keys a cluster's nodes must trust (the payload of a ``keys`` statement whose
    version is ``version``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_id: Annotated[str, Field(min_length=1, max_length=256)]
    version: int = Field(ge=1)
    keys: tuple[AnnouncedKey, ...] = Field(min_length=1, max_length=MAX_ANNOUNCED_KEYS)

    @model_validator(mode="after")
    def _one_active_and_valid_keys(self) -> SigningKeySet:
        active = [k for k in self.keys if k.state is AnnouncedState.ACTIVE]
        if len(active) != 1:
            raise ValueError("a key set has exactly one active key")
        if len({k.kid for k in self.keys}) != len(self.keys):
            raise ValueError("a key set lists each kid once")
        for key in self.keys:
            key.trusted()  # raises ValueError for a bad key or a kid that is not its own
        return self


@dataclass(frozen=True)
class KeyRing:
    """The keys one node trusts (pure; the caller stores the accepted sets)."""

    pinned: tuple[TrustedKey, ...]
    learned: tuple[TrustedKey, ...] = ()
    keys_version: int = 0  # version of the newest accepted SigningKeySet

    def trusted(self) -> tuple[TrustedKey, ...]:
        seen: dict[str, TrustedKey] = {}
        for key in (*self.pinned, *self.learned):
            seen.setdefault(key.kid, key)
        return tuple(seen.values())

    def verifier(
        self, *, max_skew_ms: int = DEFAULT_MAX_SKEW_MS, max_age_ms: int = DEFAULT_MAX_AGE_MS
    ) -> Verifier:
        return Verifier(self.trusted(), max_skew_ms=max_skew_ms, max_age_ms=max_age_ms)

    def learn(
        self,
        signed: SignedPayload,
        *,
        cluster_id: str,
        now_ms: int,
        live: bool = True,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
    ) -> tuple[KeyRing, Verified]:
        """The ring after accepting a signed key set (unchanged when the set is the one
        held); ``SignatureRejected`` when it must not be accepted."""
        verified = self.verifier(max_skew_ms=max_skew_ms, max_age_ms=max_age_ms).verify(
            signed,
            cluster_id=cluster_id,
            kinds=Kind.KEYS,
            applied=Applied(keys_version=self.keys_version),
            now_ms=now_ms,
            live=live,
        )
        try:
            key_set = SigningKeySet.model_validate_json(verified.payload)
        except ValidationError as exc:
            raise SignatureRejected(
                RejectReason.MALFORMED, f"not a SigningKeySet ({exc.error_count()} errors)"
            ) from None
        verified.require_fields(cluster_id=key_set.cluster_id, version=key_set.version)
        if not verified.apply:
            return self, verified
        learned = tuple(k.trusted() for k in key_set.keys)
        return replace(self, learned=learned, keys_version=key_set.version), verified
