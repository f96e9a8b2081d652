"""The one cursor codec (``lambdas.domain.cursors``): what every paginated route and
store hands out and reads back."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lambdas.domain.cursors import NOT_ISSUED, decode_cursor, encode_cursor
from lambdas.domain.errors import InvalidInput


@pytest.mark.parametrize(
    ("position", "kind"),
    [
        ("2026-12-05T06:00:00.000000Z#0a1b2c3d", str),
        (["alice", "c-a1\x1ealice\x1fdev1", "user", "asc"], list),
        ({"mdm_device_id": {"S": "m-1"}}, dict),
    ],
)
def test_a_position_round_trips_in_a_url_safe_unpadded_cursor(position: Any, kind: type) -> None:
    cursor = encode_cursor(position)
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert decode_cursor(cursor, kind) == position


def test_a_dashboard_cursor_is_what_it_was_before_the_codec_was_shared() -> None:
    position = ["2026-12-05T06:00", "row", "last_seen", "desc"]
    before = base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()
    assert encode_cursor(position) == before.rstrip("=")


def test_a_padded_store_cursor_from_before_still_reads() -> None:
    key = {"pk": {"S": "override#alice"}, "sk": {"S": "x"}}
    padded = base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()
    assert decode_cursor(padded, dict) == key


@pytest.mark.parametrize("cursor", ["!!not-a-cursor!!", "%%%", "bm90LW91cnM", "", "e30"])
def test_anything_else_is_invalid_input_never_a_crash(cursor: str) -> None:
    # "bm90LW91cnM" is "not-ours"; "e30" is "{}", a dict where a list is wanted.
    with pytest.raises(InvalidInput, match=NOT_ISSUED):
        decode_cursor(cursor, list)


def test_the_position_must_be_of_the_kind_its_user_issues() -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor(["a"]), dict)
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor({"a": 1}), str)
