"""The one codec of the API's page cursors, for every paginated route and store.

A cursor is opaque to clients: the unpadded URL-safe base64 of the compact JSON of a
position (the dashboard's sort value and row key, the audit trail's last record, a
DynamoDB ``LastEvaluatedKey``). Each user checks that the decoded position has the shape
it issues; anything else is ``InvalidInput``, never a server error. Decoding accepts the
padded form too, so cursors issued before the codec was shared still read.

Pure: values in, values out.
"""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

from lambdas.domain.errors import InvalidInput

NOT_ISSUED = "cursor is not one this API issued"

P = TypeVar("P", str, list[Any], dict[str, Any])


def encode_cursor(position: Any) -> str:
    """The cursor of a JSON-serialisable position."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: type[P]) -> P:
    """The position a cursor holds, of the kind its user issues (a string, a list, a
    DynamoDB key); ``InvalidInput`` when it is not one of ours."""
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeError) as exc:  # binascii.Error is a ValueError
        raise InvalidInput(NOT_ISSUED) from exc
    if not isinstance(position, kind):
        raise InvalidInput(NOT_ISSUED)
    return position
