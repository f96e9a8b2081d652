"""Small helpers shared by the write side's DynamoDB adapters: attribute values in and
out, paging, and the one translation of botocore errors into typed errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError

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


# BatchGetItem takes at most 100 keys; what it leaves unprocessed (throttling, the 16 MB
# response limit) is asked again, a few times, before the read fails.
_BATCH_KEYS = 100
_BATCH_ROUNDS = 8


def batch_get(
    client: Any, table: str, keys: Sequence[Item], store: str, *, consistent: bool = True
) -> list[Item]:
    """Every item of ``keys`` that exists (BatchGetItem, in chunks of 100)."""
    found: list[Item] = []
    for start in range(0, len(keys), _BATCH_KEYS):
        request: dict[str, Any] = {
            table: {"Keys": list(keys[start : start + _BATCH_KEYS]), "ConsistentRead": consistent}
        }
        for _ in range(_BATCH_ROUNDS):
            with translated(store):
                response = client.batch_get_item(RequestItems=request)
            found.extend(response.get("Responses", {}).get(table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise StorageError(f"{store} unavailable (reads kept being throttled)")
    return found
