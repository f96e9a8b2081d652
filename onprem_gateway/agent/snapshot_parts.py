"""A whole policy sent to a worker in bounded parts, assembled there between requests.

A worker that took a 100,000-device policy as one ~24 MB JSON line parsed it and built
its index in one go on its event loop: 2.5-4 s without answering a request. The agent
sends it instead as (``channel.py`` states the lines)::

    begin   the index's header: cluster, version, confirmation, settings; the counts
    part    PART_ENTRIES device entries or credentials at most, a sequence number
    ...
    commit  the number of parts

The worker validates each part as it comes (the contract's models, as for every other
op) and folds it into a new index (``core.policy_index.IndexBuilder``), serving requests
between two parts with the policy it holds; ``commit`` checks that every part arrived
and the counts match, and only then is the new index swapped in (one reference: a
request is never decided with a half-built policy). A part that is malformed, out of
sequence or missing aborts the assembly (``ReplacementError``) and the worker keeps
its policy.

What is sent is the agent's index itself, not the op that produced it: a full
replacement leaves the worker holding exactly what the agent holds (with the versions
pushes applied out of order), whatever the op was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from onprem_gateway.core.policy_index import IndexBuilder, PolicyIndex
from seg_contract import ClusterSettings, DeviceEntry, UserCredential

# Entries per part: validating 1,000 entries and folding them into the new index costs
# ~3 ms of a worker's event loop (~250 KB of JSON), so a part never holds up a request
# for long, and a 100,000-device policy crosses in 100 parts.
PART_ENTRIES = 500


class ReplacementError(ValueError):
    """A part the worker cannot use: the assembly is abandoned, the policy held stays."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReplacementHead(_Strict):
    """The ``begin`` body: everything of the index but its entries (the arguments of
    ``IndexBuilder.build``, read from the agent's ``PolicyIndex``)."""

    model_config = ConfigDict(from_attributes=True)

    cluster_id: str
    version: int = Field(ge=0)
    confirmed_at: float
    generated_at: datetime
    settings: ClusterSettings
    settings_version: int = Field(ge=0)
    ahead: frozenset[int] = frozenset()


class _Part(_Strict):
    devices: tuple[DeviceEntry, ...] = ()
    credentials: tuple[UserCredential, ...] = ()


_DEVICES: TypeAdapter[list[DeviceEntry]] = TypeAdapter(list[DeviceEntry])
_CREDENTIALS: TypeAdapter[list[UserCredential]] = TypeAdapter(list[UserCredential])


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _slices(index: PolicyIndex) -> Iterator[tuple[list[DeviceEntry], list[UserCredential]]]:
    devices = index.devices()
    while chunk := list(islice(devices, PART_ENTRIES)):
        yield chunk, []
    credentials = index.credentials()
    while chunk_c := list(islice(credentials, PART_ENTRIES)):
        yield [], chunk_c


def replacement_lines(index: PolicyIndex) -> Iterator[bytes]:
    """The lines that replace a worker's policy with ``index``, one message (header line
    and body line) at a time: the caller gives its event loop a turn between two, so
    encoding a large policy never stalls it either. ``index`` is immutable, so the
    iteration stays valid however long the caller takes."""
    head = ReplacementHead.model_validate(index)
    begin = {"op": "begin", "devices": index.device_count()}
    begin |= {"credentials": index.credential_count(), "body": True}
    yield _line(begin) + head.model_dump_json().encode() + b"\n"
    seq = 0
    for devices, credentials in _slices(index):
        yield (
            _line({"op": "part", "seq": seq, "body": True})
            + b'{"devices":'
            + _DEVICES.dump_json(devices)
            + b',"credentials":'
            + _CREDENTIALS.dump_json(credentials)
            + b"}\n"
        )
        seq += 1
    yield _line({"op": "commit", "parts": seq, "version": index.version})


def _refusal(what: str, error: ValidationError) -> ReplacementError:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return ReplacementError(
        f"{what} refused: {error.error_count()} error(s), first at {where or 'top'}: {first['msg']}"
    )


class Assembly:
    """A replacement being received: the header, then the parts folded in order."""

    def __init__(self, head: ReplacementHead, devices: int, credentials: int) -> None:
        self.head = head
        self.counts = (devices, credentials)
        self._builder = IndexBuilder()
        self._next = 0

    @classmethod
    def begin(cls, header: dict[str, Any], body: bytes) -> Assembly:
        """From the ``begin`` message: its header line (the counts) and body line."""
        devices, credentials = header.get("devices"), header.get("credentials")
        if not (isinstance(devices, int) and isinstance(credentials, int)):
            raise ReplacementError("replacement begin without its counts")
        try:
            return cls(ReplacementHead.model_validate_json(body), devices, credentials)
        except ValidationError as e:
            raise _refusal("replacement header", e) from None

    @property
    def version(self) -> int:
        return self.head.version

    def references(self) -> Iterator[object]:
        """What the parts folded so far hold (``IndexBuilder.references``)."""
        return self._builder.references()

    def add(self, seq: object, body: bytes) -> None:
        """Validate part ``seq`` and fold it into the new index."""
        if seq != self._next:
            raise ReplacementError(f"replacement part {seq!r} where part {self._next} was due")
        try:
            part = _Part.model_validate_json(body)
        except ValidationError as e:
            raise _refusal(f"replacement part {seq}", e) from None
        self._builder.add_devices(part.devices)
        self._builder.add_credentials(part.credentials)
        self._next += 1

    def commit(self, parts: object) -> PolicyIndex:
        """The new index, once every part arrived and the counts match the header."""
        builder = self._builder
        if parts != self._next:
            raise ReplacementError(f"replacement of {parts!r} parts: {self._next} arrived")
        held = (builder.device_count, builder.credential_count)
        if held != self.counts:
            raise ReplacementError(
                f"replacement holds {held[0]} devices and {held[1]} credentials, its "
                f"begin says {self.counts[0]} and {self.counts[1]}"
            )
        return builder.build(**dict(self.head))
