"""One email device's page in the console: what each cluster's gateways saw of it
(their rows and the device's last access events there), the entry each cluster enforces
and, per gateway node, whether that node holds it yet, its MDM record and compliance
history, the admins' override, the operators' note and the last notice to its user.

Whether a node holds the entry is computed from versions alone (a node that applied
policy version V holds every entry of version <= V: the control plane's convergence
rule), so it needs nothing from the node itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from lambdas.domain.access import ManualOverride
from lambdas.domain.access_history import HistoryEvent
from lambdas.domain.compliance import DeviceRecord
from lambdas.domain.email_view import AccessObservation, email_device_key, observation_key
from lambdas.domain.errors import InvalidInput, NotFound
from lambdas.domain.mdm_events import MDM_EVENT, CheckinEvent, EnrollmentEvent
from lambdas.domain.notices import NoticeMarker
from lambdas.ports import (
    AccessHistoryStore,
    ClusterStore,
    ConnectionStore,
    DeviceEventLog,
    DeviceNote,
    DeviceNoteStore,
    DeviceStore,
    EmailDeviceView,
    GatewayNodeStore,
    ManualOverrideStore,
    NoticeStore,
    PolicyEntryStore,
)
from lambdas.usecases.clusters import node_statuses
from lambdas.usecases.dashboard import EmailDevice
from lambdas.usecases.roster_index import os_label, pending
from seg_contract import DeviceEntry

COMPLIANCE_HISTORY = 20


@dataclass(frozen=True)
class EntryInCluster:
    cluster_id: str
    entry: DeviceEntry


@dataclass(frozen=True)
class NodeHolding:
    cluster_id: str
    node_id: str
    connected: bool
    policy_version: int | None
    last_seen: str
    holds: Literal["current", "behind", "unknown"]


@dataclass(frozen=True)
class ComplianceRecord:
    received_at: str
    occurred_at: str
    kind: str  # enrollment | checkin | unenrollment
    summary: str


@dataclass(frozen=True)
class DevicePageStores:
    view: EmailDeviceView
    devices: DeviceStore
    overrides: ManualOverrideStore
    clusters: ClusterStore
    entries: PolicyEntryStore
    nodes: GatewayNodeStore
    connections: ConnectionStore
    history: AccessHistoryStore
    device_events: DeviceEventLog
    notes: DeviceNoteStore
    notices: NoticeStore


@dataclass(frozen=True)
class DevicePage:
    row: EmailDevice  # the newest observation (or the MDM's facts alone)
    observations: list[EmailDevice]  # one per cluster that saw it, newest first
    entries: list[EntryInCluster]
    nodes: list[NodeHolding]
    history: dict[str, list[HistoryEvent]]  # cluster id -> newest first
    device: DeviceRecord | None
    compliance_history: list[ComplianceRecord]
    override: ManualOverride | None
    note: DeviceNote | None
    notice: NoticeMarker | None


def row_from(
    key: str,
    obs: AccessObservation | None,
    *,
    device: DeviceRecord | None,
    override: ManualOverride | None,
    user: str,
    device_id: str,
) -> EmailDevice:
    action = override.action.value if override is not None and override.effective else None
    access = obs.access_state if obs else ""
    return EmailDevice(
        row_key=obs.observation_key if obs else "",
        email_device_key=key,
        user=obs.user if obs else user,
        device_id=obs.device_id if obs else device_id,
        device_type=obs.device_type if obs else "",
        model=device.model if device else "",
        os=os_label(device.platform, device.os_version) if device else "",
        user_agent=obs.user_agent if obs else "",
        mdm_device_id=device.mdm_device_id if device else "",
        enrollment_state=device.enrollment_state.value if device else "unknown",
        compliance_state=device.compliance_state.value if device else "unknown",
        access_state=access,
        reason=obs.reason if obs else "",
        rule=obs.rule if obs else "",
        last_seen=obs.last_seen if obs else "",
        last_command=obs.last_command if obs else "",
        last_node=obs.last_node if obs else "",
        cluster_id=obs.cluster_id if obs else "",
        override="allow" if action == "allow" else "block" if action == "block" else None,
        pending=pending(access, action or ""),
    )


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def describe_mdm_event(body: str) -> tuple[str, str, str] | None:
    """(kind, occurred_at, summary) of a stored Device Services event."""
    try:
        event = MDM_EVENT.validate_json(body)
    except (ValidationError, ValueError):
        return None
    occurred = event.occurred_at.isoformat()
    if isinstance(event, EnrollmentEvent):
        what = " ".join(p for p in (event.platform, event.model, event.os_version) if p)
        ids = ", ".join(event.eas_device_ids)
        summary = f"enrolled for {event.user} ({what or 'no details'}; EAS {ids})"
        return event.type, occurred, summary
    if isinstance(event, CheckinEvent):
        return (
            event.type,
            occurred,
            f"check-in: compromised {_yes(event.compromised)}, encrypted "
            f"{_yes(event.encrypted)}, passcode {_yes(event.passcode)}"
            + (f", OS {event.os_version}" if event.os_version else ""),
        )
    return event.type, occurred, "unenrolled"


def compliance_history(
    events: DeviceEventLog, mdm_device_id: str, limit: int = COMPLIANCE_HISTORY
) -> list[ComplianceRecord]:
    out: list[ComplianceRecord] = []
    for stored in events.for_device(mdm_device_id, limit):
        described = describe_mdm_event(stored.body)
        if described is not None:
            kind, occurred, summary = described
            out.append(ComplianceRecord(stored.received_at, occurred, kind, summary))
    return out


def device_page(user: str, device_id: str, stores: DevicePageStores) -> DevicePage:
    key = email_device_key(user, device_id)
    norm_user, _, norm_device = key.partition("\x1f")
    if not norm_user or not norm_device:
        raise InvalidInput("user and device id must not be empty")
    clusters = [c.cluster_id for c in stores.clusters.list_clusters()]
    keys = {cid: observation_key(cid, key) for cid in clusters}
    # Rows written before rows were keyed by cluster sit under the bare entry key.
    rows = stores.view.get_many([*keys.values(), key])
    by_cluster: dict[str, AccessObservation] = {}
    for obs in rows.values():
        held = by_cluster.get(obs.cluster_id)
        if held is None or obs.newer_than(held):
            by_cluster[obs.cluster_id] = obs
    mdm_id = stores.devices.find_by_email_device(norm_user, norm_device)
    device = stores.devices.get(mdm_id) if mdm_id else None
    entries = [
        EntryInCluster(cid, entry)
        for cid in clusters
        if (entry := stores.entries.get_device_entry(cid, norm_user, norm_device)) is not None
    ]
    if not by_cluster and device is None and not entries:
        raise NotFound(f"email device {norm_user}/{norm_device} not found")
    override = stores.overrides.get(norm_user, norm_device)
    observations = sorted(
        (
            row_from(
                key, o, device=device, override=override, user=norm_user, device_id=norm_device
            )
            for o in by_cluster.values()
        ),
        key=lambda r: (r.last_seen, r.cluster_id),
        reverse=True,
    )
    headline = (
        observations[0]
        if observations
        else row_from(
            key, None, device=device, override=override, user=norm_user, device_id=norm_device
        )
    )
    found = stores.history.get_many([keys[c] for c in by_cluster if c in keys])
    history = {cid: found.get(keys[cid], []) for cid in by_cluster if cid in keys}
    versions = {e.cluster_id: e.entry.version for e in entries}
    nodes: list[NodeHolding] = []
    for cid in sorted(set(versions) | set(by_cluster)):
        if cid not in keys:
            continue
        for status in node_statuses(cid, nodes=stores.nodes, connections=stores.connections):
            applied = status.report.policy_version
            wanted = versions.get(cid)
            holds: Literal["current", "behind", "unknown"] = (
                "unknown"
                if applied is None or wanted is None
                else "current"
                if applied >= wanted
                else "behind"
            )
            nodes.append(
                NodeHolding(
                    cluster_id=cid,
                    node_id=status.report.node_id,
                    connected=status.connected,
                    policy_version=applied,
                    last_seen=status.report.last_seen,
                    holds=holds,
                )
            )
    return DevicePage(
        row=headline,
        observations=observations,
        entries=entries,
        nodes=nodes,
        history=history,
        device=device,
        compliance_history=compliance_history(stores.device_events, mdm_id) if mdm_id else [],
        override=override,
        note=stores.notes.get(key),
        notice=stores.notices.marker(key),
    )


def note_text(raw: str) -> str:
    text = raw.strip()
    if len(text) > 2000:
        raise InvalidInput("a note holds at most 2,000 characters")
    return text
