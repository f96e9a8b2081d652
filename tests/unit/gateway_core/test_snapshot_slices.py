"""A snapshot parsed a slice of devices at a time gives what one parse of the whole
gives: the same snapshot, or the same error."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from onprem_gateway.core.snapshot_slices import parse_in_slices, split_devices
from seg_contract import Access, PolicySnapshot
from tests.unit.gateway_core.builders import credential, entry, snapshot

# Strings that look like the places the bytes are cut.
TRICKY = (
    '},{"user":',
    '}],"credentials":[',
    '"devices":[{"user":',
    '\\},{\\"user\\":',
    "}]",
    '\\"',
    "\\",
    "ü\u2028",
)


def run(steps: Generator[None, None, PolicySnapshot]) -> tuple[PolicySnapshot, int]:
    """The result, and how many steps it took."""
    count = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, count + 1
        count += 1


def big_snapshot(n: int, reason: str = "") -> PolicySnapshot:
    return snapshot(
        version=n + 1,
        devices=tuple(
            entry(f"user{i}", f"dev{i}", Access.ALLOW, version=i + 1, reason=reason)
            for i in range(n)
        ),
        credentials=(credential("user1", version=2, pw1_hashes=("scrypt$x",)),),
    )


def same_as_whole(payload: bytes, slice_bytes: int = 2_000) -> tuple[Any, int]:
    """The sliced parse's result and steps, checked against the whole parse (both raise
    the same errors, or return equal snapshots)."""
    try:
        whole: PolicySnapshot | None = PolicySnapshot.model_validate_json(payload)
        whole_error = None
    except ValidationError as exc:
        whole, whole_error = None, exc.errors()
    try:
        sliced, steps = run(parse_in_slices(payload, slice_bytes))
    except ValidationError as exc:
        assert exc.errors() == whole_error
        return None, 0
    assert whole_error is None
    assert sliced == whole
    return sliced, steps


def test_a_large_snapshot_is_parsed_in_slices_to_the_same_result() -> None:
    payload = big_snapshot(200).model_dump_json().encode()
    result, steps = same_as_whole(payload)
    assert steps > 10  # it was sliced
    assert result.devices[199].user == "user199" and len(result.credentials) == 1


def test_the_pieces_put_back_together_are_the_original_bytes() -> None:
    payload = big_snapshot(300).model_dump_json().encode()
    split = split_devices(payload, 1_000)
    assert split is not None
    envelope, spans = split
    devices = b",".join(payload[begin:end] for begin, end in spans)
    assert envelope.replace(b'"devices":[]', b'"devices":[' + devices + b"]", 1) == payload
    assert len(spans) > 10
    # Each piece is a run of whole devices, and the envelope keeps the credentials.
    pieces = [json.loads(b"[" + payload[begin:end] + b"]") for begin, end in spans]
    assert [d["user"] for piece in pieces for d in piece] == [f"user{i}" for i in range(300)]
    assert len(json.loads(envelope)["credentials"]) == 1


@pytest.mark.parametrize("tricky", TRICKY)
def test_strings_that_look_like_a_cut_change_nothing(tricky: str) -> None:
    payload = big_snapshot(50, reason=f"x{tricky}y").model_dump_json().encode()
    result, steps = same_as_whole(payload, slice_bytes=500)
    assert result.devices[0].reason == f"x{tricky}y" and steps > 1


def test_other_layouts_are_parsed_whole() -> None:
    snap = big_snapshot(30)
    pretty = json.dumps(json.loads(snap.model_dump_json()), indent=1).encode()
    assert split_devices(pretty) is None
    assert same_as_whole(pretty) == (snap, 1)
    empty = snapshot(version=3).model_dump_json().encode()
    assert split_devices(empty) is None
    assert same_as_whole(empty) == (snapshot(version=3), 1)


def test_an_invalid_device_in_a_middle_slice_gives_the_whole_documents_error() -> None:
    data = json.loads(big_snapshot(100).model_dump_json())
    data["devices"][50]["access"] = "maybe"
    data["devices"][70]["version"] = 0
    payload = json.dumps(data, separators=(",", ":")).encode()
    assert split_devices(payload, 1_000) is not None
    with pytest.raises(ValidationError) as raised:
        run(parse_in_slices(payload, 1_000))
    assert [e["loc"] for e in raised.value.errors()] == [
        ("devices", 50, "access"),
        ("devices", 70, "version"),
    ]


def test_devices_written_twice_mean_what_the_whole_document_says() -> None:
    compact = big_snapshot(20).model_dump_json()
    again = compact[:-1] + ',"devices":[' + entry("x", "y").model_dump_json() + "]}"
    result, _ = same_as_whole(again.encode(), slice_bytes=300)
    assert [d.user for d in result.devices] == ["x"]  # the last one wins, as for JSON


def test_broken_json_inside_the_devices_gives_the_whole_documents_error() -> None:
    payload = big_snapshot(40).model_dump_json().encode()
    cut = payload.index(b'},{"user":"user20"')
    for broken in (payload[:cut] + payload[cut + 1 :], payload[: cut + 2] + payload[cut + 30 :]):
        same_as_whole(broken, slice_bytes=300)


@settings(max_examples=60, deadline=None)
@given(
    reasons=st.lists(st.text(max_size=30), min_size=1, max_size=30),
    slice_bytes=st.integers(min_value=1, max_value=3_000),
    mangle=st.none() | st.tuples(st.integers(min_value=0), st.binary(max_size=4)),
)
def test_fuzz_sliced_equals_whole(
    reasons: list[str], slice_bytes: int, mangle: tuple[int, bytes] | None
) -> None:
    snap = snapshot(
        version=40,
        devices=tuple(
            entry(f"u{i}", f"d{i}", Access.BLOCK, version=i + 1, reason=r or "r")
            for i, r in enumerate(reasons)
        ),
    )
    payload = snap.model_dump_json().encode()
    if mangle is not None:
        at, junk = mangle
        at %= len(payload)
        payload = payload[:at] + junk + payload[at + len(junk) :]
    same_as_whole(payload, slice_bytes)


def test_only_the_snapshot_itself_has_devices_or_credentials() -> None:
    # The cuts rely on it: ``"devices":[`` and ``"credentials":[`` can only be the
    # snapshot's own fields, because no model below it has such a field or takes
    # fields it does not know.
    schema = PolicySnapshot.model_json_schema()
    assert {"devices", "credentials"} <= set(schema["properties"])
    for name, model in schema["$defs"].items():
        if model.get("type") != "object":
            continue
        assert model.get("additionalProperties") is False, name
        assert not {"devices", "credentials"} & set(model["properties"]), name
        for field in model["properties"].values():
            assert "additionalProperties" not in field, (name, field)
