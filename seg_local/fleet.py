"""A large synthetic fleet for the console, published straight into the roster: what
``bench/dashboard_query.py`` and the tests of the console at tenant scale (250,000
devices) run against, built in a few seconds instead of the hours 250,000 devices would
take to sync through a gateway.

The fleet is deterministic (``seed``): users ``fleet-user-NNNNNN``, device ids
``FLEETDEVNNNNNN``, last seen spread over ``days`` before ``now`` (newest first by index),
access states 70 % allow, 20 % block, 5 % quarantine, 5 % unknown-device blocks, three
nodes, two clusters; every other device is enrolled in the MDM (a quarter of those
non-compliant) and every 100th has an override. Published as a new roster epoch, so warm
API functions load it; the devices exist only in the roster (not in the view table), so
their device pages are empty: the fleet is for the list, its search, filters and totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.timefmt import format_instant
from lambdas.ports import EmailDeviceView, MdmFacts, RosterJournal, RosterSnapshots, SnapshotHead
from lambdas.usecases.roster import COMPACT_MARGIN, fold, publish_index
from lambdas.usecases.roster_index import RosterIndex

CLUSTERS = ("c-fleet-a", "c-fleet-b")
NODES = ("node-1", "node-2", "node-3")
MODELS = ("iPhone 15", "iPhone 13", "Galaxy S21", "Pixel 8", "iPad Air")


def user_of(i: int) -> str:
    return f"fleet-user-{i:06d}"


def device_of(i: int) -> str:
    return f"fleetdev{i:06d}"  # normalised (case-folded) as the gateways report them


def decision_of(i: int) -> tuple[str, str]:
    bucket = i % 20
    if bucket < 14:
        return "allow", "entry"
    if bucket < 18:
        return "block", "entry"
    if bucket == 18:
        return "quarantine", "entry"
    return "block", "unknown_device"


def compliance_of(i: int) -> str:
    if i % 2:
        return "unknown"  # not enrolled
    return "non_compliant" if i % 8 == 0 else "compliant"


@dataclass(frozen=True)
class Fleet:
    observations: dict[str, list[str]]
    facts: dict[str, MdmFacts]
    overrides: dict[str, str]

    def index(self) -> RosterIndex:
        index = RosterIndex()
        index.load(self.observations, self.facts, self.overrides)
        return index


def build(n: int, now: datetime, *, days: int = 90) -> Fleet:
    span = days * 86_400
    seen = [format_instant(now - timedelta(seconds=(i * span) // max(n, 1))) for i in range(n)]
    decisions = [decision_of(i) for i in range(n)]
    observations = {
        "user": [user_of(i) for i in range(n)],
        "device_id": [device_of(i) for i in range(n)],
        "cluster_id": [CLUSTERS[(i // 7) % 2] for i in range(n)],
        "device_type": [MODELS[i % 5].split()[0] for i in range(n)],
        "user_agent": [f"{MODELS[i % 5].split()[0]}-Mail/{i % 13}" for i in range(n)],
        "last_seen": seen,
        "event_id": [f"fleet{i:010d}" for i in range(n)],
        "last_command": [("Sync", "Ping", "FolderSync")[i % 3] for i in range(n)],
        "access_state": [d for d, _ in decisions],
        "reason": [("compliant" if d == "allow" else f"{d}ed by policy") for d, _ in decisions],
        "rule": [r for _, r in decisions],
        "last_node": [NODES[i % 3] for i in range(n)],
    }
    facts = {
        f"{user_of(i)}\x1f{device_of(i)}": MdmFacts(
            mdm_device_id=f"fleet-mdm-{i:06d}",
            model=MODELS[i % 5],
            platform="Android" if "Galaxy" in MODELS[i % 5] or "Pixel" in MODELS[i % 5] else "iOS",
            os_version="15" if i % 3 else "14",
            enrollment_state="enrolled",
            compliance_state=compliance_of(i),
        )
        for i in range(0, n, 2)
    }
    overrides = {f"{user_of(i)}\x1f{device_of(i)}": "block" for i in range(0, n, 100)}
    return Fleet(observations, facts, overrides)


def publish(
    *,
    snapshots: RosterSnapshots,
    journal: RosterJournal,
    view: EmailDeviceView,
    n: int,
    now: datetime,
    days: int = 90,
) -> SnapshotHead:
    """Add a fleet of ``n`` devices to the roster and publish it as a new epoch: warm
    API functions reload it, and keep every device they had (the real ones stay)."""
    index = build(n, now, days=days).index()
    current = fold(snapshots=snapshots, journal=journal, view=view).index
    for slot in range(len(current)):
        index.apply_observation(current.observation(slot))
    for key, facts in current.facts().items():
        index.set_facts(key, facts)
    for key, action in current.overrides().items():
        index.set_override(key, action)
    clock = journal.now()
    return publish_index(snapshots, index, watermark=clock - COMPACT_MARGIN, now=clock)
