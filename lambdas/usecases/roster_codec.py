"""How the roster travels: compact snapshots and journal entries, as bytes.

A snapshot is one JSON document, zlib-compressed, column by column: each column is its
distinct values and, per row, the index of the row's value (a little-endian uint32 array,
base64). Repeated values (states, reasons, user agents, nodes) are stored once, and
decoding is a ``json.loads`` of the distinct values plus one list comprehension per
column: ~1 s and ~15 MB for 250,000 rows. The store splits the bytes into items.

A journal entry is either the observations one payload batch folded in (content: the
consumer merges them newest-wins) or the email-device keys whose MDM facts or override
changed (markers: the consumer reads their current join).

Pure: values in, bytes out and back.
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lambdas.domain.email_view import OBSERVATION_STRINGS, AccessObservation
from lambdas.ports import MdmFacts
from lambdas.usecases.roster_index import OBSERVATION_COLUMNS, RosterIndex

FORMAT_VERSION = 1
# Stored: the observation columns but the two keys, which follow from the others.
_STORED = tuple(c for c in OBSERVATION_COLUMNS if c not in ("row_key", "email_device_key"))
_FACT_FIELDS = (
    "mdm_device_id",
    "model",
    "platform",
    "os_version",
    "enrollment_state",
    "compliance_state",
)
_OBS_FIELDS = ("email_device_key", *OBSERVATION_STRINGS)


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this code wrote."""


def _encode_column(values: Sequence[str]) -> dict[str, Any]:
    distinct: dict[str, int] = {}
    indexes = array("I", (distinct.setdefault(v, len(distinct)) for v in values))
    if sys.byteorder != "little":
        indexes.byteswap()
    return {"d": list(distinct), "i": base64.b64encode(indexes.tobytes()).decode()}


def _decode_column(encoded: dict[str, Any], rows: int) -> list[str]:
    distinct = encoded["d"]
    indexes = array("I")
    indexes.frombytes(base64.b64decode(encoded["i"]))
    if sys.byteorder != "little":
        indexes.byteswap()
    if len(indexes) != rows:
        raise SnapshotError("a snapshot column does not have one value per row")
    return [distinct[i] for i in indexes]


@dataclass(frozen=True)
class Snapshot:
    watermark: str  # format_instant(): every journal entry before it is folded in
    observations: dict[str, list[str]]  # OBSERVATION_COLUMNS
    facts: dict[str, MdmFacts]
    overrides: dict[str, str]

    @property
    def rows(self) -> int:
        return len(self.observations["user"])

    @staticmethod
    def of(index: RosterIndex, watermark: str) -> Snapshot:
        return Snapshot(
            watermark=watermark,
            observations={c: list(index.columns[c]) for c in _STORED},
            facts=index.facts(),
            overrides=index.overrides(),
        )

    def load_into(self, index: RosterIndex) -> None:
        index.load(self.observations, self.facts, self.overrides)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    fact_keys = sorted(snapshot.facts)
    override_keys = sorted(snapshot.overrides)
    document = {
        "v": FORMAT_VERSION,
        "watermark": snapshot.watermark,
        "rows": snapshot.rows,
        "obs": {c: _encode_column(snapshot.observations[c]) for c in _STORED},
        "facts": {
            "rows": len(fact_keys),
            "key": _encode_column(fact_keys),
            **{
                f: _encode_column([getattr(snapshot.facts[k], f) for k in fact_keys])
                for f in _FACT_FIELDS
            },
        },
        "overrides": {k: snapshot.overrides[k] for k in override_keys},
    }
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 1)


def decode_snapshot(data: bytes) -> Snapshot:
    try:
        document = json.loads(zlib.decompress(data))
        if document.get("v") != FORMAT_VERSION:
            raise SnapshotError(f"snapshot format {document.get('v')!r} is not {FORMAT_VERSION}")
        rows = int(document["rows"])
        observations = {c: _decode_column(document["obs"][c], rows) for c in _STORED}
        facts_doc = document["facts"]
        fact_rows = int(facts_doc["rows"])
        keys = _decode_column(facts_doc["key"], fact_rows)
        columns = {f: _decode_column(facts_doc[f], fact_rows) for f in _FACT_FIELDS}
        facts = {
            key: MdmFacts(**{f: columns[f][i] for f in _FACT_FIELDS}) for i, key in enumerate(keys)
        }
        overrides = {str(k): str(v) for k, v in document["overrides"].items()}
        return Snapshot(str(document["watermark"]), observations, facts, overrides)
    except (zlib.error, ValueError, KeyError, TypeError, IndexError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"not a roster snapshot: {exc}") from exc


# --- journal entries -----------------------------------------------------------------


def encode_observations(observations: Sequence[AccessObservation]) -> bytes:
    rows = [[getattr(o, f) for f in _OBS_FIELDS] + [1 if o.enforced else 0] for o in observations]
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)


def decode_observations(data: bytes) -> list[AccessObservation]:
    rows = json.loads(zlib.decompress(data))
    return [
        AccessObservation(
            **dict(zip(_OBS_FIELDS, row[: len(_OBS_FIELDS)], strict=True)),
            enforced=bool(row[len(_OBS_FIELDS)]),
        )
        for row in rows
    ]


def encode_keys(keys: Sequence[str]) -> bytes:
    return zlib.compress(json.dumps(sorted(set(keys)), separators=(",", ":")).encode(), 6)


def decode_keys(data: bytes) -> list[str]:
    return [str(k) for k in json.loads(zlib.decompress(data))]
