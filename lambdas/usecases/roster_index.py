"""The console's device roster in memory: every email-device row of the tenant, held as
columns, with exact filters, search, sort on any column and keyset paging.

Why in memory: the console must search, filter and sort *every* device (250,000 per
tenant and more) with exact totals, and no DynamoDB layout serves "substring of user,
device id or model, sorted by any column, filtered by any other" without reading every
row. Each warm API function holds one copy (``roster.RosterCache`` loads a snapshot and
replays the journal of changes since); a query is then a few passes over Python lists:

- filters are list comprehensions over one column each (~10 ms per 250,000 rows);
- search is a substring test over a prepared, case-folded "haystack" per row;
- the page is ``heapq.nsmallest`` (or ``nlargest``) of ``limit + 1`` rows by
  (sort value, row key), O(rows log limit), never a full sort;
- the total is the number of rows that pass the filters: exact.

Rows are one cluster's observation of an email device (``email_view``), joined with the
MDM record's facts and the admins' override of that email device, which arrive apart
(``set_facts``, ``set_override``) and are copied into every row of the device so that
every column is a plain per-row list. Observations only move forward (newest
(last_seen, event_id) wins, as in the view table), so replaying the journal twice or out
of order ends in the same state.

Pure: values in, values out (``now`` is a parameter).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.email_view import (
    OBSERVATION_STRINGS,
    AccessObservation,
    observation_key,
)
from lambdas.domain.timefmt import format_instant
from lambdas.ports import MdmFacts
from seg_contract import entry_key
from seg_contract.decision_rules import DecisionRule

ACCESS_STATES = ("allow", "block", "quarantine")

# Per-row columns that come from the observation: its keys and its text fields (the
# protocol version aside: the console never shows it).
OBSERVATION_COLUMNS = (
    "row_key",
    "email_device_key",
    *(f for f in OBSERVATION_STRINGS if f != "protocol_version"),
)
# Per-row columns copied from the MDM facts and the override of the row's email device.
JOINED_COLUMNS = (
    "mdm_device_id",
    "model",
    "os",
    "enrollment_state",
    "compliance_state",
    "override",
    "pending",
)
COLUMNS = OBSERVATION_COLUMNS + JOINED_COLUMNS
SORT_COLUMNS = tuple(c for c in COLUMNS if c not in ("row_key", "event_id"))
# Sorted by their stored value; the others case-insensitively.
_EXACT_SORT = frozenset({"last_seen", "pending", "row_key"})
# Columns with few distinct values share one string object per value (memory).
_SHARED = frozenset(COLUMNS) - {
    "row_key",
    "email_device_key",
    "user",
    "device_id",
    "last_seen",
    "event_id",
    "mdm_device_id",
}


def os_label(platform: str, os_version: str) -> str:
    """ "iOS 18.1" from ("iOS", "18.1"); an MDM that already names the platform in the
    version ("Android 15") is not repeated ("Android Android 15")."""
    platform, version = platform.strip(), os_version.strip()
    if not version:
        return platform
    if not platform or version.casefold().startswith(platform.casefold()):
        return version
    return f"{platform} {version}"


def pending(access_state: str, override: str) -> bool:
    """An override the gateways' newest decision does not reflect yet."""
    return (
        bool(override) and access_state != "" and (access_state == "allow") != (override == "allow")
    )


@dataclass(frozen=True)
class RosterQuery:
    access_state: str | None = None  # allow | block | quarantine | unknown
    compliance_state: str | None = None
    cluster_id: str | None = None
    node: str | None = None
    not_seen_days: int | None = None  # last seen more than this many days ago
    q: str | None = None  # substring of user, device id, device type, model, MDM id
    sort: str = "last_seen"
    descending: bool = True
    limit: int = 50
    after: tuple[str, str] | None = None  # keyset: (sort value, row key) of the last row


@dataclass(frozen=True)
class RosterPage:
    slots: list[int]
    total: int
    more: bool


@dataclass(frozen=True)
class RosterCounts:
    counts: dict[str, int]  # allow / block / quarantine / unknown (unknown-device rule)
    blocked_since: int  # rows refused whose last request is at or after the instant


class RosterIndex:
    """Columns of equal length; a row is a slot number. Rows are never removed."""

    def __init__(self) -> None:
        self.columns: dict[str, list[str]] = {c: [] for c in COLUMNS}
        self._slot: dict[str, int] = {}  # row key -> slot
        self._device_slots: dict[str, list[int]] = {}  # email device key -> slots
        self._facts: dict[str, MdmFacts] = {}
        self._overrides: dict[str, str] = {}
        self._hay: list[str] = []
        self._interned: dict[str, str] = {}
        self._sort_keys: dict[str, list[str]] = {}  # case-folded columns, built lazily
        self.version = 0  # moves on every change (callers cache on it)

    def __len__(self) -> int:
        return len(self._hay)

    # --- changes --------------------------------------------------------------------

    def _intern(self, value: str) -> str:
        return self._interned.setdefault(value, value)

    def _stored(self, column: str, value: str) -> str:
        return self._intern(value) if column in _SHARED else value

    def _folded(self, column: str, value: str) -> str:
        folded = value.casefold()
        if folded == value:
            return value
        return self._intern(folded) if column in _SHARED else folded

    def _set(self, slot: int, column: str, value: str) -> None:
        self.columns[column][slot] = self._stored(column, value)
        keys = self._sort_keys.get(column)
        if keys is not None:
            keys[slot] = self._folded(column, value)

    def _haystack(self, slot: int) -> str:
        c = self.columns
        parts = (c["user"], c["device_id"], c["device_type"], c["model"], c["mdm_device_id"])
        return "\x00".join(p[slot] for p in parts).casefold()

    def apply_observation(self, obs: AccessObservation) -> bool:
        """Take the observation if it is newer than the row's (or the row is new)."""
        key = obs.observation_key
        slot = self._slot.get(key)
        c = self.columns
        if slot is not None and (c["last_seen"][slot], c["event_id"][slot]) >= (
            obs.last_seen,
            obs.event_id,
        ):
            return False
        if slot is None:
            slot = len(self._hay)
            self._slot[key] = slot
            self._device_slots.setdefault(obs.email_device_key, []).append(slot)
            for column in COLUMNS:
                c[column].append("")
            for keys in self._sort_keys.values():
                keys.append("")
            self._hay.append("")
            self._set(slot, "row_key", key)
            self._set(slot, "email_device_key", obs.email_device_key)
            self._join(slot, obs.email_device_key)
        for column in OBSERVATION_COLUMNS[2:]:
            self._set(slot, column, getattr(obs, column))
        self._set(slot, "pending", _flag(pending(obs.access_state, c["override"][slot])))
        self._hay[slot] = self._haystack(slot)
        self.version += 1
        return True

    def _join(self, slot: int, email_device_key: str) -> None:
        facts = self._facts.get(email_device_key)
        override = self._overrides.get(email_device_key, "")
        values = {
            "mdm_device_id": facts.mdm_device_id if facts else "",
            "model": facts.model if facts else "",
            "os": os_label(facts.platform, facts.os_version) if facts else "",
            "enrollment_state": facts.enrollment_state if facts else "unknown",
            "compliance_state": facts.compliance_state if facts else "unknown",
            "override": override,
            "pending": _flag(pending(self.columns["access_state"][slot], override)),
        }
        for column, value in values.items():
            self._set(slot, column, value)
        self._hay[slot] = self._haystack(slot)

    def set_facts(self, email_device_key: str, facts: MdmFacts | None) -> None:
        """The MDM record's facts for an email device (None: the MDM does not know it)."""
        if facts is None:
            self._facts.pop(email_device_key, None)
        else:
            self._facts[email_device_key] = facts
        for slot in self._device_slots.get(email_device_key, ()):
            self._join(slot, email_device_key)
        self.version += 1

    def set_override(self, email_device_key: str, action: str | None) -> None:
        """The effective override ("allow" / "block"), or None when there is none."""
        if action:
            self._overrides[email_device_key] = action
        else:
            self._overrides.pop(email_device_key, None)
        for slot in self._device_slots.get(email_device_key, ()):
            self._join(slot, email_device_key)
        self.version += 1

    def facts(self) -> dict[str, MdmFacts]:
        return dict(self._facts)

    def overrides(self) -> dict[str, str]:
        return dict(self._overrides)

    def device_keys(self) -> Iterable[str]:
        return self._device_slots.keys()

    def has_device(self, email_device_key: str) -> bool:
        return email_device_key in self._facts or email_device_key in self._overrides

    # --- reads ----------------------------------------------------------------------

    def slot_of(self, row_key: str) -> int | None:
        return self._slot.get(row_key)

    def slots_of_device(self, email_device_key: str) -> list[int]:
        return list(self._device_slots.get(email_device_key, ()))

    def value(self, slot: int, column: str) -> str:
        return self.columns[column][slot]

    def observation(self, slot: int) -> AccessObservation:
        """The observation a row holds (its protocol version is not kept)."""
        c = self.columns
        return AccessObservation(
            **{column: c[column][slot] for column in OBSERVATION_COLUMNS[1:]},
            enforced=True,
            protocol_version="",
        )

    def row(self, slot: int) -> dict[str, str]:
        return {column: values[slot] for column, values in self.columns.items()}

    def sort_value(self, slot: int, column: str) -> str:
        value = self.columns[column][slot]
        return value if column in _EXACT_SORT else value.casefold()

    def _sort_column(self, column: str) -> list[str]:
        if column in _EXACT_SORT:
            return self.columns[column]
        keys = self._sort_keys.get(column)
        if keys is None:
            keys = [self._folded(column, v) for v in self.columns[column]]
            self._sort_keys[column] = keys
        return keys

    def _filtered(self, query: RosterQuery, now: datetime) -> Iterator[int] | range:
        c = self.columns
        candidates: Iterable[int] | None = None

        def narrow(column: str, test: Callable[[str], bool]) -> None:
            nonlocal candidates
            values = c[column]
            if candidates is None:
                candidates = [i for i, v in enumerate(values) if test(v)]
            else:
                candidates = [i for i in candidates if test(values[i])]

        if query.access_state == "unknown":
            narrow("rule", lambda v: v == DecisionRule.UNKNOWN_DEVICE)
        elif query.access_state:
            wanted = query.access_state
            narrow("access_state", lambda v: v == wanted)
        if query.compliance_state:
            compliance = query.compliance_state
            narrow("compliance_state", lambda v: v == compliance)
        if query.cluster_id:
            cluster = query.cluster_id
            narrow("cluster_id", lambda v: v == cluster)
        if query.node:
            node = query.node
            narrow("last_node", lambda v: v == node)
        if query.not_seen_days is not None:
            cutoff = format_instant(now - timedelta(days=query.not_seen_days))
            narrow("last_seen", lambda v: v < cutoff)
        if query.q:
            needle = query.q.casefold()
            hay = self._hay
            if candidates is None:
                candidates = [i for i, h in enumerate(hay) if needle in h]
            else:
                candidates = [i for i in candidates if needle in hay[i]]
        return iter(candidates) if candidates is not None else range(len(self._hay))

    def query(self, query: RosterQuery, now: datetime) -> RosterPage:
        """The page after ``query.after`` in (sort value, row key) order, and the exact
        number of rows that pass the filters."""
        matched = list(self._filtered(query, now))
        total = len(matched)
        values = self._sort_column(query.sort)
        keys = self.columns["row_key"]
        if query.after is not None:
            after = query.after
            if query.descending:
                matched = [i for i in matched if (values[i], keys[i]) < after]
            else:
                matched = [i for i in matched if (values[i], keys[i]) > after]

        def order(i: int) -> tuple[str, str]:
            return values[i], keys[i]

        pick = heapq.nlargest if query.descending else heapq.nsmallest
        page = pick(query.limit + 1, matched, key=order)
        return RosterPage(slots=page[: query.limit], total=total, more=len(page) > query.limit)

    def counts(self, since: datetime) -> RosterCounts:
        """The summary: rows by access state (unknown-device decisions apart), and rows
        refused whose newest request is at or after ``since``."""
        c = self.columns
        counts = {state: 0 for state in (*ACCESS_STATES, "unknown")}
        cutoff = format_instant(since)
        blocked = 0
        for state, rule, seen in zip(c["access_state"], c["rule"], c["last_seen"], strict=True):
            bucket = (
                "unknown"
                if rule == DecisionRule.UNKNOWN_DEVICE or state not in ACCESS_STATES
                else state
            )
            counts[bucket] += 1
            if state in ("block", "quarantine") and seen >= cutoff:
                blocked += 1
        return RosterCounts(counts=counts, blocked_since=blocked)

    def clusters_and_nodes(self) -> tuple[list[str], list[str]]:
        """The distinct clusters and nodes rows name (the console's filter choices)."""
        return sorted(set(self.columns["cluster_id"])), sorted(set(self.columns["last_node"]))

    # --- bulk load ------------------------------------------------------------------

    def load(
        self,
        observations: dict[str, list[str]],
        facts: dict[str, MdmFacts],
        overrides: dict[str, str],
    ) -> None:
        """Replace everything with a snapshot's content: ``observations`` holds the
        ``OBSERVATION_COLUMNS`` as equal-length lists (``row_key`` and
        ``email_device_key`` may be left out: they follow from the others). Built column
        by column (a 250,000-row snapshot loads in about a second)."""
        self.__init__()  # type: ignore[misc]
        c = self.columns
        n = len(observations["user"])
        for column in OBSERVATION_COLUMNS:
            if column in ("row_key", "email_device_key") and column not in observations:
                continue
            values = observations[column]
            if len(values) != n:
                raise ValueError(f"snapshot column {column} has {len(values)} rows, not {n}")
            if column in _SHARED:
                # A decoded snapshot already shares one string per distinct value.
                for value in set(values):
                    self._interned.setdefault(value, value)
            c[column] = values
        if "email_device_key" not in observations:
            c["email_device_key"] = [
                entry_key(u, d) for u, d in zip(c["user"], c["device_id"], strict=True)
            ]
        if "row_key" not in observations:
            c["row_key"] = [
                observation_key(cl, k)
                for cl, k in zip(c["cluster_id"], c["email_device_key"], strict=True)
            ]
        self._facts = dict(facts)
        self._overrides = dict(overrides)
        self._slot = {key: slot for slot, key in enumerate(c["row_key"])}
        for slot, device in enumerate(c["email_device_key"]):
            self._device_slots.setdefault(device, []).append(slot)
        self._join_all()
        self.version += 1

    def _join_all(self) -> None:
        """Every row's joined columns and haystack, column by column."""
        c = self.columns
        keys = c["email_device_key"]
        found = [self._facts.get(k) for k in keys]
        labels: dict[tuple[str, str], str] = {}

        def label(f: MdmFacts) -> str:
            pair = (f.platform, f.os_version)
            if pair not in labels:
                labels[pair] = self._intern(os_label(*pair))
            return labels[pair]

        c["mdm_device_id"] = [f.mdm_device_id if f else "" for f in found]
        c["model"] = [f.model if f else "" for f in found]
        c["os"] = [label(f) if f else "" for f in found]
        c["enrollment_state"] = [f.enrollment_state if f else "unknown" for f in found]
        c["compliance_state"] = [f.compliance_state if f else "unknown" for f in found]
        c["override"] = [self._overrides.get(k, "") for k in keys]
        c["pending"] = [
            "1" if o and a and (a == "allow") != (o == "allow") else ""
            for a, o in zip(c["access_state"], c["override"], strict=True)
        ]
        parts = (c["user"], c["device_id"], c["device_type"], c["model"], c["mdm_device_id"])
        self._hay = ["\x00".join(p).casefold() for p in zip(*parts, strict=True)]
        self._sort_keys = {}


def _flag(value: bool) -> str:
    return "1" if value else ""
