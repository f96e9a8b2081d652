"""The one DynamoDB toolkit of the control plane's adapters: attribute values in and out
(boto3's ``TypeSerializer`` / ``TypeDeserializer``, with typed accessors so that numbers
read back as ``int`` or ``float`` and binaries as ``bytes``), reads across pages (boto3's
paginators; one explicit page for the routes that hand a cursor back), batched reads,
and the one translation of botocore errors into typed errors.

Adapters never see ``ClientError``: ``translated`` turns a refused condition into
``ConditionFailed`` (with the item DynamoDB returned, if any) and a cancelled transaction
into ``TransactionCancelled`` (with its reasons), both raised only inside adapters, which
map them to their domain outcome; everything else (throttling, a missing table, an
outage) is the domain's ``StorageError``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Literal

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.domain.errors import StorageError

Item = dict[str, Any]
Operation = Literal["query", "scan"]

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class ConditionFailed(Exception):
    """A conditional write did not apply (raised only inside adapters). ``item`` is the
    stored item DynamoDB returned with the refusal
    (``ReturnValuesOnConditionCheckFailure="ALL_OLD"``), low-level; empty when none."""

    def __init__(self, item: Item | None = None) -> None:
        super().__init__("condition failed")
        self.item: Item = item or {}


class TransactionCancelled(Exception):
    """A TransactWriteItems was cancelled (raised only inside adapters): ``reasons`` has
    one code per action, in order ("None" for the actions that were not the cause)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"transaction cancelled: {reasons}")
        self.reasons = reasons


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated(store: str) -> Iterator[None]:
    """Turn botocore errors into ``ConditionFailed`` / ``TransactionCancelled`` /
    ``StorageError`` ("<store> unavailable", the one message a caller sees for
    throttling, a missing table or an outage alike)."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code == "ConditionalCheckFailedException":
            raise ConditionFailed(refused_item(exc)) from exc
        if code == "TransactionCanceledException":
            reasons = exc.response.get("CancellationReasons", [])
            raise TransactionCancelled([str(r.get("Code", "")) for r in reasons]) from exc
        raise StorageError(f"{store} unavailable") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{store} unavailable") from exc


def refused_item(exc: ClientError) -> Item:
    """The stored item DynamoDB returns with a refused conditional write
    (``ReturnValuesOnConditionCheckFailure="ALL_OLD"``); empty when there was none."""
    found: Any = exc.response.get("Item")
    return dict(found) if isinstance(found, dict) else {}


# --- values in --------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    # TypeSerializer refuses floats (they may be inexact); a float is stored as the
    # decimal of its shortest repr, the digits ``str(float)`` always wrote.
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    return value


def attr(value: Any) -> Item:
    """One Python value as a DynamoDB attribute value: str, int, float, bool, bytes,
    None (NULL), a set of str (SS), a list or tuple (L), a mapping (M)."""
    return dict(_SERIALIZER.serialize(_exact(value)))


def s(value: str) -> Item:
    return attr(value)


def n(value: int | float) -> Item:
    return attr(value)


def to_item(values: Mapping[str, Any]) -> Item:
    """A whole item (or key) from attribute names and Python values."""
    return {name: attr(value) for name, value in values.items()}


def expression_values(values: Mapping[str, Any]) -> Item:
    """``ExpressionAttributeValues`` from placeholder names (``:name``) and Python values."""
    return {name: attr(value) for name, value in values.items()}


# --- values out -------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value.value)  # type: ignore[attr-defined]  # the stubs omit .value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def value_of(raw: Any) -> Any:
    """A DynamoDB attribute value as Python: numbers as int (integral) or float,
    binaries as bytes, sets as sets, lists and maps recursively."""
    return _plain(_DESERIALIZER.deserialize(raw))


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A whole low-level item as Python values (see ``value_of``)."""
    return {name: value_of(raw) for name, raw in item.items()}


def _field(item: Mapping[str, Any], name: str) -> Any:
    raw = item.get(name)
    return value_of(raw) if isinstance(raw, dict) and raw else None


def get_s(item: Item, name: str, default: str = "") -> str:
    found = _field(item, name)
    return found if isinstance(found, str) else default


def get_n(item: Item, name: str, default: int = 0) -> int:
    found = _field(item, name)
    is_number = isinstance(found, int | float) and not isinstance(found, bool)
    return int(found) if is_number else default


def get_opt_n(item: Item, name: str) -> int | None:
    found = _field(item, name)
    is_number = isinstance(found, int | float) and not isinstance(found, bool)
    return int(found) if is_number else None


def get_opt_float(item: Item, name: str) -> float | None:
    found = _field(item, name)
    is_number = isinstance(found, int | float) and not isinstance(found, bool)
    return float(found) if is_number else None


def get_bool(item: Item, name: str) -> bool | None:
    found = _field(item, name)
    return found if isinstance(found, bool) else None


def get_bytes(item: Item, name: str) -> bytes:
    found = _field(item, name)
    return found if isinstance(found, bytes) else b""


def get_str_list(item: Item, name: str) -> list[str]:
    found = _field(item, name)
    return [str(v) for v in found] if isinstance(found, list) else []


def get_str_set(item: Item, name: str) -> frozenset[str]:
    found = _field(item, name)
    return frozenset(str(v) for v in found) if isinstance(found, set) else frozenset()


def get_list(item: Item, name: str) -> list[Any]:
    found = _field(item, name)
    return found if isinstance(found, list) else []


def get_map(item: Item, name: str) -> dict[str, Any]:
    found = _field(item, name)
    return found if isinstance(found, dict) else {}


# --- reads across pages -----------------------------------------------------------------


def paged(client: Any, operation: Operation, store: str, **kwargs: Any) -> Iterator[Item]:
    """Every item of a Query or Scan, through boto3's paginator."""
    pages = iter(client.get_paginator(operation).paginate(**kwargs))
    while True:
        with translated(store):
            page = next(pages, None)
        if page is None:
            return
        yield from (dict(item) for item in page.get("Items", []))


def one_page(
    client: Any, operation: Operation, store: str, start: Item | None = None, **kwargs: Any
) -> tuple[list[Item], Item | None]:
    """One page of a Query or Scan from ``start`` (a page cursor's position) on, and its
    ``LastEvaluatedKey`` (None: the last page). The paginated routes hand that key back
    as a cursor of the one codec (``lambdas.domain.cursors``), which a paginator's own
    opaque resume token is not, so they read a page at a time here."""
    if start:
        kwargs["ExclusiveStartKey"] = start
    with translated(store):
        page = getattr(client, operation)(**kwargs)
    last = page.get("LastEvaluatedKey")
    return [dict(item) for item in page.get("Items", [])], dict(last) if last else None


# BatchGetItem takes at most 100 keys; what it leaves unprocessed (throttling, the 16 MB
# response limit) is asked again, a few times, before the read fails.
BATCH_KEYS = 100
_BATCH_ROUNDS = 8


def batch_rounds(client: Any, request: dict[str, Any], store: str) -> Iterator[dict[str, Any]]:
    """The ``Responses`` of one BatchGetItem request, then of what it left unprocessed,
    asked again up to ``_BATCH_ROUNDS`` times in all; ``StorageError`` after that."""
    for _ in range(_BATCH_ROUNDS):
        with translated(store):
            response = client.batch_get_item(RequestItems=request)
        yield response.get("Responses", {})
        request = response.get("UnprocessedKeys") or {}
        if not request:
            return
    raise StorageError(f"{store} unavailable (reads kept being throttled)")


def batch_get(
    client: Any, table: str, keys: Sequence[Item], store: str, *, consistent: bool = True
) -> list[Item]:
    """Every item of ``keys`` that exists (BatchGetItem, in chunks of 100)."""
    found: list[Item] = []
    for start in range(0, len(keys), BATCH_KEYS):
        request: dict[str, Any] = {
            table: {"Keys": list(keys[start : start + BATCH_KEYS]), "ConsistentRead": consistent}
        }
        for responses in batch_rounds(client, request, store):
            found.extend(responses.get(table, []))
    return found
