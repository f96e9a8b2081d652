"""Policy signing keys: the console's rotation routes (``/console/v1/signing-keys``, a
console admin) and the signed key set gateways learn the next key from
(``GET /gateway/v1/signing-keys``, a gateway's cluster credential).

The keys are KMS keys of the stack (``signing_keys`` in the CDK context); these routes
only move them through the registry (``lambdas.domain.signing_keys``) and never create,
delete or export one. Nothing is ever answered unsigned: without a usable key the
gateway route answers 503.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from lambdas.api.auth import AdminAudit, Viewer
from lambdas.api.auth import Gateway as GatewayCaller
from lambdas.api.deps import Now, Signing, SigningKeyRegistry
from lambdas.domain.signing_keys import KeyRegistry
from lambdas.domain.timefmt import format_instant
from lambdas.usecases import signing_keys as cases
from seg_contract.http import GATEWAY_PREFIX, SIGNING_KEYS_PATH
from seg_contract.key_ring import SigningKeySet

console = APIRouter(prefix="/console/v1", tags=["console"])
gateway = APIRouter(prefix=GATEWAY_PREFIX, tags=["gateway"])

Store = SigningKeyRegistry
Kid = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$", description="key id (fingerprint)")]


class SigningKeyInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    kid: str
    state: str  # next | active | previous | retired
    key_arn: str
    public_key: str = Field(description="base64 DER SubjectPublicKeyInfo: what nodes pin")
    created_at: str
    changed_at: str


class SigningKeys(BaseModel):
    model_config = ConfigDict(frozen=True)

    generation: int = Field(description="the key set version nodes see")
    recorded: bool = Field(description="false: no rotation yet, the stack's first key")
    keys: list[SigningKeyInfo]
    trusted: list[str] = Field(
        description="public keys a node must trust now (SEG_GW_POLICY_SIGNING_KEYS)"
    )


class SigningKeyRegister(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_arn: Annotated[str, Field(min_length=20, max_length=2048)]


def _answer(registry: KeyRegistry, recorded: bool = True) -> SigningKeys:
    return SigningKeys(
        generation=registry.generation,
        recorded=recorded,
        keys=[
            SigningKeyInfo(
                kid=k.kid,
                state=k.state.value,
                key_arn=k.key_arn,
                public_key=k.public_key,
                created_at=format_instant(k.created_at),
                changed_at=format_instant(k.changed_at),
            )
            for k in registry.keys
        ],
        trusted=[k.public_key for k in registry.trusted],
    )


def _states(registry: KeyRegistry) -> dict[str, str]:
    """What the audit trail keeps of a key change: each key's state (public facts only)."""
    return {k.kid: k.state.value for k in registry.keys}


@console.get(
    "/signing-keys",
    response_model=SigningKeys,
    summary="The policy signing keys and which one signs (the public keys nodes pin)",
)
def list_keys(*, _user: Viewer, signing: Signing, store: Store, now: Now) -> SigningKeys:
    registry, recorded = cases.list_signing_keys(signing=signing, store=store, now=now)
    return _answer(registry, recorded)


@console.post(
    "/signing-keys",
    response_model=SigningKeys,
    status_code=status.HTTP_201_CREATED,
    summary="Rotation step 1: announce one of the stack's keys as the next signing key",
)
def register_key(
    *, body: SigningKeyRegister, audit: AdminAudit, signing: Signing, store: Store, now: Now
) -> SigningKeys:
    registry = cases.register_signing_key(body.key_arn, signing=signing, store=store, now=now)
    audit.record("signing_key.register", body.key_arn, after=_states(registry))
    return _answer(registry)


@console.post(
    "/signing-keys/{kid}/activate",
    response_model=SigningKeys,
    summary="Rotation step 2: sign with the next key (the active one becomes previous)",
)
def activate_key(
    *, kid: Kid, audit: AdminAudit, signing: Signing, store: Store, now: Now
) -> SigningKeys:
    registry = cases.activate_signing_key(kid, signing=signing, store=store, now=now)
    audit.record("signing_key.activate", kid, after=_states(registry))
    return _answer(registry)


@console.post(
    "/signing-keys/{kid}/retire",
    response_model=SigningKeys,
    summary="Rotation step 3: stop announcing a previous (or abandoned next) key",
)
def retire_key(
    *, kid: Kid, audit: AdminAudit, signing: Signing, store: Store, now: Now
) -> SigningKeys:
    registry = cases.retire_signing_key(kid, signing=signing, store=store, now=now)
    audit.record("signing_key.retire", kid, after=_states(registry))
    return _answer(registry)


@gateway.get(
    SIGNING_KEYS_PATH.removeprefix(GATEWAY_PREFIX),
    response_model=SigningKeySet,
    summary="The keys this cluster's nodes must trust, signed (statement in the headers)",
)
def get_signing_keys(*, caller: GatewayCaller, signing: Signing, now: Now) -> Response:
    signed = signing.key_set(caller.cluster_id, now)
    return Response(signed.payload, media_type="application/json", headers=signed.headers())
