"""Wire models shared by the control plane and the gateway (contract version 2).

Theory of operation
-------------------
Every change to a cluster's effective policy (device entries, user credentials, the
cluster settings) is stamped with one *policy version* of that cluster. The control
plane hands versions out from one atomic counter per cluster and writes everything a
version changes in one transaction, together with that version's record in the
cluster's policy log (``lambdas.usecases.policy_versions`` has the whole protocol).

The cluster's *committed version* W is the highest version such that every version up
to it is settled: written, or abandoned by a writer that died and fenced off so it can
never be written later. W only moves forward, and it is the only version the control
plane ever states to a gateway:

- a *snapshot* says ``version = W``: it holds, for every key, the newest entry whose
  version is at most W, and possibly a newer one (a write that committed while the
  snapshot was read);
- a *delta since N* says ``version = W`` and holds the current entry of every key that a
  version in (N, W] changed (HTTP 410 when the log no longer covers N: take the
  snapshot);
- a *push* (``PushChange``) carries every change of one committed version, all at once;
- a *pong* answers a keepalive with W, so a node that missed a push notices within one
  report interval.

The gateway applies entries **per key, newest version wins** (duplicates, replays and
out-of-order pushes change nothing) and keeps an *applied version* V with the invariant

    a node at applied version V holds, for every key, an entry at least as new as the
    newest one whose version is <= V.

V moves to a snapshot's or a delta's version, or by one with the push of version V + 1;
a push beyond V + 1 is applied per key but does not move V (the node fetches a delta).
Because the control plane never states a version before everything up to it is
written, no interleaving of writers, fetches and lost, duplicated or reordered pushes
can make a node claim a version whose changes it lacks.

Anti-entropy: both sides compute the same digest of a policy (``seg_contract.digest``).
A node reports its digest with each keepalive when its state is exactly "version V"
(it holds nothing newer than V); the control plane compares it with its own digest of
version V and answers ``diverged`` when they differ, and the node then replaces its
policy with a fresh snapshot. Divergence from any cause heals within one report
interval (``ClusterSettings.report_interval_s``).

Limits: lists are bounded so that a malicious or broken peer cannot make the other side
allocate without bound. A snapshot is not bounded by count (a tenant may have 100,000
devices) but every string in it is.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

CONTRACT_VERSION: Literal[2] = 2

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


class UnverifiableIdentity(StrEnum):
    """What a gateway does with a request whose user it cannot verify (Negotiate with
    Kerberos inside, an unknown Authorization scheme): the mail server would
    authenticate a user the gateway cannot name, so the query's ``User=`` is only a
    claim."""

    REFUSE = "refuse"  # 401 with the schemes the gateway can verify (the default)
    # Decide by the query's user, but only for a device whose entry exists and belongs
    # to that user (no unknown-device action, no OPTIONS or Autodiscover).
    DEVICE_ONLY = "device_only"


class Jwk(_Model):
    """One public signing key of a token issuer (RFC 7517), as the control plane fetched
    it from the issuer's ``jwks_uri``: public members only (a private member such as
    ``d`` is refused), so the key set can travel in the policy."""

    kty: Literal["RSA", "EC", "OKP"]
    kid: Annotated[str, Field(max_length=256)] = ""
    use: Literal["", "sig"] = ""
    alg: Annotated[str, Field(max_length=16)] = ""
    n: Annotated[str, Field(max_length=2048)] = ""  # RSA modulus (base64url)
    e: Annotated[str, Field(max_length=16)] = ""  # RSA exponent
    crv: Annotated[str, Field(max_length=16)] = ""  # EC / OKP curve
    x: Annotated[str, Field(max_length=256)] = ""
    y: Annotated[str, Field(max_length=256)] = ""

    @model_validator(mode="after")
    def _members_of_its_type(self) -> Jwk:
        need = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}[self.kty]
        missing = [name for name in need if not getattr(self, name)]
        if missing:
            raise ValueError(f"{self.kty} key without {', '.join(missing)}")
        return self


class BearerIssuer(_Model):
    """A token issuer whose access tokens the cluster's gateways accept (hybrid modern
    authentication, ``Authorization: Bearer``). A gateway verifies the signature with
    ``keys``, ``iss`` equal to ``issuer``, ``aud`` one of ``audiences``, ``exp`` / ``nbf``
    with a small clock skew, and takes the user from the ``user_claim`` claim. The keys
    travel in the signed policy: a node never fetches them (it needs no network to the
    identity provider, and keeps verifying while the cloud is unreachable); the control
    plane refreshes them from ``jwks_uri``."""

    issuer: Annotated[str, Field(min_length=1, max_length=512)]
    audiences: tuple[Annotated[str, Field(min_length=1, max_length=512)], ...] = Field(
        min_length=1, max_length=10
    )
    user_claim: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] = "upn"
    jwks_uri: Annotated[str, Field(max_length=1024)] = ""
    keys: tuple[Jwk, ...] = Field(default=(), max_length=20)
    keys_fetched_at: datetime | None = None


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
    # How often each node reports (keepalive with its policy digest): a node that missed
    # a push, or whose policy diverged for any reason, is repaired within this interval,
    # and a silent control plane is noticed within it (plus the pong deadline).
    report_interval_s: int = Field(default=30, ge=10, le=300)
    # Requests whose user the gateway cannot verify (Kerberos, unknown schemes).
    unverifiable_identity: UnverifiableIdentity = UnverifiableIdentity.REFUSE
    # Issuers of the Bearer tokens the gateways accept (none: Bearer is refused).
    bearer_issuers: tuple[BearerIssuer, ...] = Field(default=(), max_length=10)

    @model_validator(mode="after")
    def _issuers_unique(self) -> ClusterSettings:
        names = [i.issuer for i in self.bearer_issuers]
        if len(names) != len(set(names)):
            raise ValueError("bearer_issuers lists an issuer twice")
        return self


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


class DevicePassword(_Model):
    """A device password (PW1) bound to the one EAS DeviceId (normalised,
    ``seg_contract.identity``) it was issued for: it opens the mailbox only from that
    device."""

    device_id: DeviceIdStr
    pw1_hash: Annotated[str, Field(max_length=512)]


class UserCredential(_Model):
    """Credential substitution for one user (the seed's PW1 -> PW2).

    ``device_passwords`` are the device passwords the user's devices present, each bound
    to its DeviceId and stored as a self-describing hash string
    (``scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64>``). ``pw1_hashes`` are device passwords
    issued before passwords were bound to a device: they still open the mailbox from
    any of the user's devices until the admin issues bound ones and removes them.
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
    device_passwords: tuple[DevicePassword, ...] = Field(default=(), max_length=50)


def entry_key(user: str, device_id: str) -> str:
    """The key of a device entry: normalised user and device id. ``\\x1f`` (unit
    separator) cannot occur in either."""
    return f"{user}\x1f{device_id}"


class PolicySnapshot(_Model):
    """The full policy of one cluster (GET /gateway/v1/policy) at its committed version
    ``version``; entries newer than ``version`` may be included (see the module doc)."""

    contract_version: Literal[2] = CONTRACT_VERSION
    cluster_id: ShortStr
    version: int = Field(ge=0)
    generated_at: datetime
    settings: ClusterSettings
    settings_version: int = Field(default=0, ge=0)  # the version that wrote ``settings``
    devices: tuple[DeviceEntry, ...] = ()
    credentials: tuple[UserCredential, ...] = ()


class PolicyDelta(_Model):
    """The changes of one cluster after ``since_version`` (GET
    /gateway/v1/policy/delta?since=N), up to ``version``."""

    contract_version: Literal[2] = CONTRACT_VERSION
    cluster_id: ShortStr
    since_version: int = Field(ge=0)
    version: int = Field(ge=0)
    generated_at: datetime
    settings: ClusterSettings | None = None  # present when the settings changed after N
    settings_version: int = Field(default=0, ge=0)  # the version that wrote ``settings``
    devices: tuple[DeviceEntry, ...] = ()
    credentials: tuple[UserCredential, ...] = ()


# --- WebSocket: control plane -> gateway ------------------------------------------------


class PushChange(_Model):
    """Everything one committed policy version changed in a cluster, in one message
    (an empty change is a version that changed nothing: it still moves a node's applied
    version on). The one message that changes a node's policy from the control plane."""

    type: Literal["change"] = "change"
    cluster_id: ShortStr
    version: int = Field(ge=1)
    devices: tuple[DeviceEntry, ...] = Field(default=(), max_length=100)
    credentials: tuple[UserCredential, ...] = Field(default=(), max_length=100)
    settings: ClusterSettings | None = None


class PushResync(_Model):
    """Fetch a delta since your applied version (e.g. after a bulk change), or, with
    ``full``, replace your policy with a fresh snapshot."""

    type: Literal["resync"] = "resync"
    cluster_id: ShortStr
    version: int = Field(ge=0)
    full: bool = False
    reason: ReasonStr = ""


class PushRevoked(_Model):
    """The node's credential was revoked: stop reconnecting with it."""

    type: Literal["revoked"] = "revoked"
    cluster_id: ShortStr


DigestCheck = Literal["in_sync", "diverged", "unchecked"]


class PushPong(_Model):
    """The answer to a keepalive: the cluster's committed version, so an idle node
    notices a missed push within one report interval, and the verdict on the digest the
    keepalive reported: ``in_sync`` (equal to the control plane's digest of
    ``checked_version``), ``diverged`` (different: replace the policy with a snapshot) or
    ``unchecked`` (no digest reported, or none kept for that version)."""

    type: Literal["pong"] = "pong"
    cluster_id: ShortStr
    version: int = Field(ge=0)
    server_time: datetime
    digest_check: DigestCheck = "unchecked"
    checked_version: int = Field(default=0, ge=0)


PushMessage = Annotated[
    PushChange | PushResync | PushRevoked | PushPong,
    Field(discriminator="type"),
]
PUSH_MESSAGE: TypeAdapter[PushMessage] = TypeAdapter(PushMessage)


# --- WebSocket: gateway -> control plane ($default route) ------------------------------


class GatewayKeepalive(_Model):
    """Sent by each node every report interval (API Gateway closes idle WebSocket
    connections after 10 minutes). Carries the node's state for the cluster panel and,
    when the node holds exactly version ``policy_version`` (nothing newer), the digest
    of its policy (``seg_contract.digest``); "" otherwise."""

    action: Literal["keepalive"] = "keepalive"
    node_id: ShortStr
    policy_version: int = Field(ge=0)
    policy_age_s: float = Field(ge=0)
    spool_depth: int = Field(ge=0)
    gateway_version: ShortStr = ""
    digest: Annotated[str, Field(pattern=r"^([0-9a-f]{32})?$")] = ""
    # Signed policy input the node refused since it started (``seg_contract.signing``:
    # a forged, altered or replayed snapshot, delta or push): how many, the reason of
    # the last one (``RejectReason``) and how long before this keepalive it came. The
    # console shows them as an alert on the node.
    policy_rejections: int = Field(default=0, ge=0)
    last_rejection: Annotated[str, Field(max_length=32, pattern=r"^[a-z_]*$")] = ""
    last_rejection_age_s: float | None = Field(default=None, ge=0)


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
    # A *folded* record (a node that could not deliver, ``onprem_gateway.core.event_fold``)
    # stands for ``count`` requests of one device with one outcome, from ``first_at`` to
    # ``at``; its other fields are those of the last of them and its ``event_id`` is its
    # own, stable across resends. Absent (the default) it is one request, as before:
    # a node sends neither field for a single event, so older readers accept it.
    count: int = Field(default=1, ge=1, le=1_000_000_000)
    first_at: datetime | None = None

    @property
    def folded(self) -> bool:
        """Whether this is a folded record (it carries ``count`` / ``first_at``)."""
        return self.count > 1 or self.first_at is not None

    @model_validator(mode="after")
    def _span_ordered(self) -> AccessEvent:
        if self.first_at is not None and self.first_at > self.at:
            raise ValueError("first_at is later than at")
        return self


class AccessEventBatch(_Model):
    contract_version: Literal[2] = CONTRACT_VERSION
    node_id: ShortStr
    events: tuple[AccessEvent, ...] = Field(min_length=1, max_length=500)
