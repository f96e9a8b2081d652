"""The one wire contract between the control plane (``lambdas``) and the gateway
(``onprem_gateway``).

Both sides import these models; neither imports the other. Everything that crosses the
network between them (policy snapshot, policy delta, WebSocket push and keepalive
messages, access-event batches) is defined here once, with the policy digest both sides
compute (``digest``), versioned by ``CONTRACT_VERSION``,
and exported as JSON Schema (``python -m seg_contract.schema``).

Policy is signed by the control plane and verified by the gateway: ``statement`` is what
is signed (one canonical encoding), ``signed`` how a signed payload travels and is
stored, ``signing`` signing and verification (and re-exports both), ``key_ring`` the
keys a gateway trusts and how it learns the next one during a rotation.

This package may import only pydantic, the standard library, PyNaCl (in ``crypto``, the
credential-substitution hashing and sealing both sides need) and cryptography (in
``signing``: ECDSA P-256 as AWS KMS produces it).
"""

from seg_contract.identity import normalize_device_id, normalize_user
from seg_contract.models import (
    CONTRACT_VERSION,
    Access,
    AccessEvent,
    AccessEventBatch,
    BearerIssuer,
    ClusterSettings,
    DeviceEntry,
    DevicePassword,
    DeviceRule,
    EntrySource,
    FailMode,
    GatewayKeepalive,
    GatewayMessage,
    Jwk,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushMessage,
    PushPong,
    PushResync,
    PushRevoked,
    RuleField,
    UnverifiableIdentity,
    UserCredential,
    entry_key,
)

__all__ = [
    "CONTRACT_VERSION",
    "Access",
    "AccessEvent",
    "AccessEventBatch",
    "BearerIssuer",
    "ClusterSettings",
    "DeviceEntry",
    "DevicePassword",
    "DeviceRule",
    "EntrySource",
    "FailMode",
    "GatewayKeepalive",
    "GatewayMessage",
    "Jwk",
    "PolicyDelta",
    "PolicySnapshot",
    "PushChange",
    "PushMessage",
    "PushPong",
    "PushResync",
    "PushRevoked",
    "RuleField",
    "UnverifiableIdentity",
    "UserCredential",
    "entry_key",
    "normalize_device_id",
    "normalize_user",
]
