"""A policy snapshot's JSON parsed a slice of devices at a time.

Validating a 100,000-device snapshot (~24 MB) is one call into pydantic-core of
~250 ms that holds the GIL: on the agent's event loop nothing else runs meanwhile, not
even a push blocking a device. ``parse_in_slices`` does the same work in slices of a
few hundred devices. It is a generator (``core.steps``): the caller runs it a
slice per event-loop turn, and its return value is the snapshot.

How the bytes are cut. The control plane writes a snapshot with pydantic
(``model_dump_json``): compact, fields in declaration order, so the devices array reads
``"devices":[{"user":...},{"user":...}]``. The cuts are made at ``},{"user":`` only, and the
array ends at ``}],"credentials":[``. In valid JSON neither byte sequence can lie inside
a string: a ``"`` inside a string is escaped as ``\\"``, and a raw ``"`` ends the
string, which ``user":`` or ``credentials":`` could not follow. Nor can they belong to
a nested object: no model of the contract below the snapshot has a ``devices`` or
``credentials`` field or takes unknown ones (a test checks this of the schema).
Each slice is then an array of its own, and the rest of the document (the envelope,
with ``"devices":[]``) another document. Put back together, the pieces are exactly the
original bytes, so if every piece validates, the result is what one validation of the
whole would give.

Anything else is settled by the whole document. A layout this does not expect
(whitespace, another field order, no devices), or any piece that does not validate,
means one validation of the whole snapshot, which gives the result or raises the error
it would have raised anyway. The envelope must also come back with no devices, so a
``devices`` key written twice (the last one wins) cannot be read as anything but what
the whole document says.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from onprem_gateway.core.steps import Steps
from seg_contract import DeviceEntry, PolicySnapshot

# About 128 KiB of JSON: ~500 devices, ~1.5 ms to validate. A request to the agent needs
# several loop turns, each of which may follow a slice: 512 KiB slices (~6 ms) kept
# `/readyz` waiting 83-84 ms while a 100,000-device snapshot was parsed, these 57-58 ms
# (`bench/snapshot_apply.py`), with the snapshot in force no later.
SLICE_BYTES = 1 << 17

_ARRAY_START = b'"devices":[{"user":'
_CUT = b'},{"user":'
_ARRAY_END = b'}],"credentials":['
_DEVICES = TypeAdapter(list[DeviceEntry])


def split_devices(
    payload: bytes, slice_bytes: int = SLICE_BYTES
) -> tuple[bytes, list[tuple[int, int]]] | None:
    """The envelope (the document with ``"devices":[]``) and the devices array cut into
    spans of about ``slice_bytes`` (``payload[begin:end]`` is a run of whole devices);
    None when the devices array is not written the way the control plane writes it."""
    start = payload.find(_ARRAY_START)
    if start < 0:
        return None
    first = start + len(b'"devices":[')  # the first device's "{"
    # The last device's "}": the credentials follow the devices (declaration order).
    last = payload.find(_ARRAY_END, first)
    if last < 0:
        return None
    spans: list[tuple[int, int]] = []
    begin = first
    while (cut := payload.find(_CUT, begin + slice_bytes, last)) >= 0:
        spans.append((begin, cut + 1))
        begin = cut + 2  # the next device's "{"
    spans.append((begin, last + 1))
    envelope = payload[: first - 1] + b"[]" + payload[last + 2 :]
    return envelope, spans


def parse_in_slices(payload: bytes, slice_bytes: int = SLICE_BYTES) -> Steps[PolicySnapshot]:
    """Validate ``payload`` as a ``PolicySnapshot``, yielding between slices. Returns
    what ``PolicySnapshot.model_validate_json(payload)`` returns, and raises what it
    raises (``ValidationError``)."""
    split = split_devices(payload, slice_bytes)
    if split is None:
        return PolicySnapshot.model_validate_json(payload)
    envelope_json, spans = split
    try:
        envelope = PolicySnapshot.model_validate_json(envelope_json)
        if envelope.devices:
            raise ValueError("devices twice")
        devices: list[DeviceEntry] = []
        for begin, end in spans:
            yield
            devices += _DEVICES.validate_json(b"[" + payload[begin:end] + b"]")
    except (ValidationError, ValueError):
        # The whole document decides: its result, or the error it gives.
        return PolicySnapshot.model_validate_json(payload)
    # Each device is validated already: no second validation of 100,000 entries.
    return envelope.model_copy(update={"devices": tuple(devices)})
