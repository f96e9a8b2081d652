"""Wire models shared by the control plane and the gateway (contract version 1).

Theory of operation
-------------------
Every change to a cluster's effective policy (a device entry, a user credential, the
cluster settings) is stamped with the cluster's next *policy version*, taken from one
atomic counter per cluster. The control plane keeps, per cluster, the latest state of
every entry together with the version that wrote it, so:

- a *snapshot* is every entry plus the settings, at ``version`` (the counter when read);
- a *delta since N* is every entry whose version is greater than N (and the settings if
  they changed after N); it is always exact, except after old tombstones were purged, in
  which case the API answers "too old, take the full snapshot" (HTTP 410);
- a *push* carries one changed entry with its version.

The gateway applies entries **per key, newest version wins**: an entry whose version is
not greater than the one it already holds for the same key changes nothing, so
duplicates, replays and out-of-order pushes are harmless, and applying is idempotent.
It also tracks ``applied_version`` (the highest version it has seen from a snapshot,
delta or push); a push whose version is more than ``applied_version + 1`` reveals a gap
and makes the gateway fetch a delta since ``applied_version``.

Two writers may take versions 5 and 6 and commit 6 first; a delta read in between
returns 6 but not 5. Per-key newest-wins makes that harmless: the push for 5 still
applies when it arrives (its key holds nothing newer), and the interval refresh is the
backstop.

Limits: lists are bounded so that a malicious or broken peer cannot make the other side
allocate without bound. A snapshot is not bounded by count (a tenant may have 100,000
devices) but every string in it is.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

CONTRACT_VERSION: Literal[1] = 1

# Bounds on every string that crosses the wire. DeviceId is at most 32 characters in
# MS-ASHTTP but real clients exceed it; 128 leaves room without allowing abuse.
ShortStr = Annotated[str, Field(max_length=256)]
DeviceIdStr = Annotated[str, Field(min_length=1, max_length=128)]
UserStr = Annotated[str, Field(min_length=1, max_length=256)]
ReasonStr = Annotated[str, Field(max_length=512)]
UserAgentStr = Annotated[str, Field(max_length=512)]


class _Model(BaseModel):
    """Frozen, strict about unknown fields: a peer that sends what we do not know is a
    peer on another contract version, and silently dropping fields would hide it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Access(StrEnum):
    """The outcome of an access decision, and of a device entry."""

    ALLOW = "allow"
    BLOCK = "block"
    QUARANTINE = "quarantine"


class FailMode(StrEnum):
    """What a gateway does once its policy is older than ``max_policy_age_s``."""

    CLOSED = "closed"  # block every device (the default: a compliance gateway fails safe)
    OPEN = "open"  # keep enforcing the last-known-good policy


class RuleField(StrEnum):
    """Which request/device fact a cluster rule matches."""

    DEVICE_TYPE = "device_type"
    MODEL = "model"
    OS = "os"
    USER_AGENT = "user_agent"


class EntrySource(StrEnum):
    """Why a device entry says what it says."""

    COMPLIANCE = "compliance"  # the MDM's compliance evaluation
    MANUAL = "manual"  # an admin's override from the console
    UNENROLLED = "unenrolled"  # the MDM unenrolled the device


class DeviceRule(_Model):
    """A cluster-wide rule: ``pattern`` is a case-insensitive shell glob (fnmatch) on
    ``field``. Rules are evaluated in list order after the per-device entries."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    field: RuleField
    pattern: Annotated[str, Field(min_length=1, max_length=256)]
    action: Access
    description: ShortStr = ""


class ClusterSettings(_Model):
    """Per-cluster gateway settings, set in the console."""

    unknown_device_action: Access = Access.BLOCK
    rules: tuple[DeviceRule, ...] = Field(default=(), max_length=500)
    blocked_users: tuple[UserStr, ...] = Field(default=(), max_length=10_000)
    test_mode: bool = False
    # The seed's Rules Refresh Interval, 60 minutes by default.
    refresh_interval_s: int = Field(default=3600, ge=60, le=86_400)
    # How long a node may go without reaching the control plane before fail_mode applies.
    max_policy_age_s: int = Field(default=86_400, ge=300, le=30 * 86_400)
    fail_mode: FailMode = FailMode.CLOSED


class DeviceEntry(_Model):
    """The access list entry for one (user, EAS DeviceId), both normalised
    (``seg_contract.identity``)."""

    user: UserStr
    device_id: DeviceIdStr
    access: Access
    reason: ReasonStr
    source: EntrySource
    version: int = Field(ge=1)
    updated_at: datetime
    mdm_device_id: ShortStr = ""
    device_type: ShortStr = ""
    model: ShortStr = ""
    os: ShortStr = ""

    @property
    def key(self) -> str:
        return entry_key(self.user, self.device_id)


class UserCredential(_Model):
    """Credential substitution for one user (the seed's PW1 -> PW2).

    ``pw1_hashes`` are the device-specific passwords the user's devices present, each a
    self-describing hash string (``scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64>``).
    ``sealed_pw2`` is the real upstream password sealed to the cluster's X25519 public
    key (libsodium ``crypto_box_seal``, base64): only the cluster's gateways can open it.
    ``enabled`` false (or an entry with no hashes) turns substitution off for the user.
    """

    user: UserStr
    enabled: bool = True
    pw1_hashes: tuple[Annotated[str, Field(max_length=512)], ...] = Field(default=(), max_length=50)
    sealed_pw2: Annotated[str, Field(max_length=4096)] = ""
    version: int = Field(ge=1)
    updated_at: datetime


def entry_key(user: str, device_id: str) -> str:
    """The key of a device entry: normalised user and device id. ``\\x1f`` (unit
    separator) cannot occur in either."""
    return f"{user}\x1f{device_id}"


class PolicySnapshot(_Model):
    """The full policy of one cluster (GET /gateway/v1/policy)."""

    contract_version: Literal[1] = CONTRACT_VERSION
    cluster_id: ShortStr
    version: int = Field(ge=0)
    generated_at: datetime
    settings: ClusterSettings
    devices: tuple[DeviceEntry, ...] = ()
    credentials: tuple[UserCredential, ...] = ()


class PolicyDelta(_Model):
    """The changes of one cluster after ``since_version`` (GET
    /gateway/v1/policy/delta?since=N), up to ``version``."""

    contract_version: Literal[1] = CONTRACT_VERSION
    cluster_id: ShortStr
    since_version: int = Field(ge=0)
    version: int = Field(ge=0)
    generated_at: datetime
    settings: ClusterSettings | None = None  # present when the settings changed after N
    devices: tuple[DeviceEntry, ...] = ()
    credentials: tuple[UserCredential, ...] = ()


# --- WebSocket: control plane -> gateway ------------------------------------------------


class PushDeviceUpdate(_Model):
    type: Literal["device_update"] = "device_update"
    cluster_id: ShortStr
    version: int = Field(ge=1)
    entry: DeviceEntry


class PushCredentialUpdate(_Model):
    type: Literal["credential_update"] = "credential_update"
    cluster_id: ShortStr
    version: int = Field(ge=1)
    credential: UserCredential


class PushSettingsUpdate(_Model):
    type: Literal["settings_update"] = "settings_update"
    cluster_id: ShortStr
    version: int = Field(ge=1)
    settings: ClusterSettings


class PushResync(_Model):
    """Fetch a delta since your applied version (e.g. after a bulk change)."""

    type: Literal["resync"] = "resync"
    cluster_id: ShortStr
    version: int = Field(ge=0)


class PushRevoked(_Model):
    """The node's credential was revoked: stop reconnecting with it."""

    type: Literal["revoked"] = "revoked"
    cluster_id: ShortStr


class PushPong(_Model):
    """The answer to a keepalive: the cluster's current policy version, so an idle node
    notices a missed push within one keepalive interval."""

    type: Literal["pong"] = "pong"
    cluster_id: ShortStr
    version: int = Field(ge=0)
    server_time: datetime


PushMessage = Annotated[
    PushDeviceUpdate
    | PushCredentialUpdate
    | PushSettingsUpdate
    | PushResync
    | PushRevoked
    | PushPong,
    Field(discriminator="type"),
]
PUSH_MESSAGE: TypeAdapter[PushMessage] = TypeAdapter(PushMessage)


# --- WebSocket: gateway -> control plane ($default route) ------------------------------


class GatewayKeepalive(_Model):
    """Sent by each node at least every 5 minutes (API Gateway closes idle WebSocket
    connections after 10). Carries the node's state for the cluster panel."""

    action: Literal["keepalive"] = "keepalive"
    node_id: ShortStr
    policy_version: int = Field(ge=0)
    policy_age_s: float = Field(ge=0)
    spool_depth: int = Field(ge=0)
    gateway_version: ShortStr = ""


GatewayMessage = Annotated[GatewayKeepalive, Field(discriminator="action")]
GATEWAY_MESSAGE: TypeAdapter[GatewayMessage] = TypeAdapter(GatewayMessage)


# --- Access events: gateway -> control plane (POST /gateway/v1/access-events) ----------


class AccessEvent(_Model):
    """One EAS request as the gateway saw and decided it. Never carries passwords,
    tokens or mail content."""

    event_id: Annotated[str, Field(min_length=8, max_length=64)]  # uuid4 hex, for dedup
    at: datetime
    node_id: ShortStr
    user: Annotated[str, Field(max_length=256)]  # normalised; "" when none was presented
    device_id: Annotated[str, Field(max_length=128)]  # normalised; "" for OPTIONS
    device_type: ShortStr = ""
    user_agent: UserAgentStr = ""
    command: Annotated[str, Field(max_length=64)]
    protocol_version: Annotated[str, Field(max_length=16)] = ""
    decision: Access
    reason: ReasonStr
    rule: Annotated[str, Field(max_length=128)] = ""  # which rule or entry decided
    # Test (monitor-only) mode: the request was let through although the decision
    # would have blocked it; ``decision`` then says what would have happened.
    enforced: bool = True
    http_status: int = Field(default=0, ge=0, le=999)


class AccessEventBatch(_Model):
    contract_version: Literal[1] = CONTRACT_VERSION
    node_id: ShortStr
    events: tuple[AccessEvent, ...] = Field(min_length=1, max_length=500)
