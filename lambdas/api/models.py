"""Request and response bodies of the HTTP API that are not wire-contract models
(``seg_contract`` holds those). Requests forbid unknown fields: a misspelt field must be
an error, not a silently ignored setting."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lambdas.domain import access_history, audit, notices
from lambdas.usecases import dashboard
from seg_contract import Access, ClusterSettings


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class Health(_Response):
    status: Literal["ok"] = "ok"


class WhoAmI(_Response):
    subject: str
    role: Literal["viewer", "operator", "admin"]
    # What the role may do (the page hides the rest; the API refuses it regardless).
    permissions: list[str]


class Accepted(_Response):
    accepted: int


class Queued(_Response):
    status: Literal["queued"] = "queued"


class EventQueued(_Response):
    event_id: str
    status: Literal["queued", "duplicate"]


# --- Dashboard --------------------------------------------------------------------------


# The row is defined once, by the use case that builds it.
EmailDevice = dashboard.EmailDevice


class EmailDevicePage(_Response):
    items: list[EmailDevice]
    next_cursor: str | None
    total: int


class PolicyEntryView(_Response):
    """What a cluster's gateways enforce for the device (its entry, with version)."""

    cluster_id: str
    access: Access
    reason: str
    source: str
    version: int
    updated_at: str


class EmailDeviceDetail(EmailDevice):
    """The device page: the newest row, then everything about the device."""

    entries: list[PolicyEntryView]
    observations: list[EmailDevice] = []  # one per cluster that saw it, newest first
    nodes: list[NodeHolding] = []
    history: list[ClusterHistory] = []  # per cluster, the last access events, newest first
    mdm: MdmSummary | None = None
    compliance_history: list[ComplianceRecord] = []
    override_info: OverrideInfo | None = None
    note: Note | None = None
    notice: NoticeStatus | None = None


class SeriesPoint(_Response):
    t: str
    requests: int
    blocks: int


class Summary(_Response):
    counts: dict[str, int]
    blocked_last_hour: int
    series: list[SeriesPoint]
    # The clusters and gateway nodes rows name (the list's filter choices).
    clusters: list[str] = []
    nodes: list[str] = []


class OverrideRequest(_Request):
    action: Literal["allow", "block", "clear"]
    reason: Annotated[str, Field(max_length=256)] = ""


class NoteUpdate(_Request):
    text: Annotated[str, Field(max_length=2000)]  # "" removes the note


class Note(_Response):
    text: str
    author: str
    updated_at: str


class NodeHolding(_Response):
    """Whether a gateway node holds the cluster's entry for the device: ``current``
    (its applied policy version is at least the entry's), ``behind`` (it still enforces
    an older decision) or ``unknown`` (it has not reported a version)."""

    cluster_id: str
    node_id: str
    connected: bool
    policy_version: int | None
    last_seen: str | None
    holds: Literal["current", "behind", "unknown"]


# An event of a device's history is defined once, by the use case that keeps it.
AccessEventView = access_history.HistoryEvent


class ClusterHistory(_Response):
    cluster_id: str
    events: list[AccessEventView]


class ComplianceRecord(_Response):
    received_at: str
    occurred_at: str
    kind: str
    summary: str


class MdmSummary(_Response):
    mdm_device_id: str
    compliance_state: str
    compliance_reasons: list[str]
    evaluated_at: str | None
    enrollment_state: str
    last_checkin_at: str | None


class NoticeStatus(_Response):
    state: str
    observed_at: str
    outcome: str  # "" queued, "sending", "sent", "skipped: ..."
    outcome_at: str


class OverrideInfo(_Response):
    action: Literal["allow", "block"]
    reason: str
    actor: str
    updated_at: str


# --- Clusters ---------------------------------------------------------------------------

ClusterName = Annotated[str, Field(min_length=1, max_length=128)]
PublicKey = Annotated[str, Field(min_length=40, max_length=64)]


class ClusterCreate(_Request):
    name: ClusterName
    public_key: PublicKey | None = None


class ClusterCreated(_Response):
    cluster_id: str
    credential: str


class CredentialIssued(_Response):
    credential: str
    key_id: str


class PublicKeyUpdate(_Request):
    public_key: PublicKey


class RevokeRequest(_Request):
    key_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class Revoked(_Response):
    revoked: list[str]
    disconnected: int


class CredentialInfo(_Response):
    key_id: str
    created_at: str
    revoked_at: str | None


class NodeInfo(_Response):
    node_id: str
    connected: bool
    policy_version: int | None  # the node's applied version, as it last reported it
    policy_age_s: float | None
    spool_depth: int | None
    last_seen: str | None
    gateway_version: str = ""
    # The last check of the node's policy digest (None: none yet), when it was last
    # found in sync, and how many times it was found diverged.
    digest_check: Literal["in_sync", "diverged", "unchecked"] | None = None
    last_verified_at: str | None = None
    digest_mismatches: int = 0
    # An alert: signed policy input the node refused since it started (forged, altered
    # or replayed on the way, or signed by a key it does not trust), the reason of the
    # last refusal and when it came.
    policy_rejections: int = 0
    last_rejection: str | None = None
    last_rejection_at: str | None = None


class ClusterSummary(_Response):
    cluster_id: str
    name: str
    policy_version: int  # the committed version (what gateways are told)
    created_at: str


class SettingsUpdated(_Response):
    cluster_id: str
    version: int


# --- Credential substitution ------------------------------------------------------------


class UpstreamPassword(_Request):
    upstream_password: Annotated[str, Field(min_length=1, max_length=1024)]


class DevicePasswordRequest(_Request):
    """The EAS DeviceId the device password is issued for (it works from that device
    only; as the device sends it, e.g. ``ApplF17XK0ABCDE``)."""

    device_id: Annotated[str, Field(min_length=1, max_length=128)]


class DevicePassword(_Response):
    device_password: str
    device_id: str  # normalised: the gateway accepts the password from this DeviceId


# --- MDM devices ------------------------------------------------------------------------


class MdmDevice(_Response):
    mdm_device_id: str
    user: str
    eas_device_ids: list[str]
    enrollment_state: str
    enrolled_at: str
    unenrolled_at: str | None
    platform: str
    model: str
    os_version: str
    managed: bool
    last_checkin_at: str | None
    compromised: bool | None
    encrypted: bool | None
    passcode: bool | None
    compliance_state: str
    compliance_reasons: list[str]
    evaluated_at: str | None


class MdmDevicePage(_Response):
    items: list[MdmDevice]
    next_cursor: str | None


# --- Audit trail ------------------------------------------------------------------------


# A record is defined once, by the use case that writes it.
AuditRecord = audit.AuditEvent


class AuditPage(_Response):
    items: list[AuditRecord]
    next_cursor: str | None


# --- Notices --------------------------------------------------------------------------

NoticeSettings = notices.NoticeSettings


class ClusterDetail(_Response):
    cluster_id: str
    name: str
    created_at: str
    policy_version: int
    settings_version: int
    settings: ClusterSettings
    public_key: str
    nodes: list[NodeInfo]
    credentials: list[CredentialInfo]
