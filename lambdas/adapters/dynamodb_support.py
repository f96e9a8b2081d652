"""Small helpers shared by the write side's DynamoDB adapters: attribute values in and
out, paging, and the one translation of botocore errors into typed errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.usecases.errors import InvalidInput, StorageError

Item = dict[str, Any]


class ConditionFailed(Exception):
    """A conditional write did not apply (raised only inside adapters)."""


@contextmanager
def translated(store: str) -> Iterator[None]:
    """Turn botocore errors into ``ConditionFailed`` / ``StorageError``."""
    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise ConditionFailed from exc
        raise StorageError(f"{store} unavailable") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{store} unavailable") from exc


def refused_item(exc: ClientError) -> Item:
    """The stored item DynamoDB returns with a refused conditional write
    (``ReturnValuesOnConditionCheckFailure="ALL_OLD"``); empty when there was none."""
    found: Any = exc.response.get("Item")
    return dict(found) if isinstance(found, dict) else {}


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def get_s(item: Item, name: str, default: str = "") -> str:
    return str(item.get(name, {}).get("S", default))


def get_n(item: Item, name: str, default: int = 0) -> int:
    raw = item.get(name, {}).get("N")
    return int(raw) if raw is not None else default


def get_bool(item: Item, name: str) -> bool | None:
    raw = item.get(name, {}).get("BOOL")
    return bool(raw) if raw is not None else None


def get_str_list(item: Item, name: str) -> list[str]:
    return [v["S"] for v in item.get(name, {}).get("L", [])]


def paged(call: Callable[..., Any], store: str, **kwargs: Any) -> Iterator[Item]:
    """Every item of a Query or Scan, following LastEvaluatedKey."""
    while True:
        with translated(store):
            page = call(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def encode_cursor(key: Item | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def decode_cursor(cursor: str) -> Item:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeError) as exc:
        raise InvalidInput("invalid cursor") from exc
    if not isinstance(value, dict):
        raise InvalidInput("invalid cursor")
    return value
