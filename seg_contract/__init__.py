"""The one wire contract between the control plane (``lambdas``) and the gateway
(``onprem_gateway``).

Both sides import these models; neither imports the other. Everything that crosses the
network between them (policy snapshot, policy delta, WebSocket push and keepalive
messages, access-event batches) is defined here once, with the policy digest both sides
compute (``digest``),, versioned by ``CONTRACT_VERSION``,
and exported as JSON Schema (``python -m seg_contract.schema``).

This package may import only pydantic, the standard library and (in ``crypto``, the
credential-substitution hashing and sealing both sides need) PyNaCl.
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
