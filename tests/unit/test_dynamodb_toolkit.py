"""The DynamoDB toolkit (``lambdas.adapters.dynamodb_support``): values in and out keep
their Python types, and botocore errors become the adapters' typed errors."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    TransactionCancelled,
    attr,
    batch_rounds,
    from_item,
    get_bool,
    get_bytes,
    get_list,
    get_map,
    get_n,
    get_opt_float,
    get_opt_n,
    get_s,
    get_str_list,
    get_str_set,
    to_item,
    translated,
)
from lambdas.domain.errors import StorageError


def _client_error(code: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, **extra}, "PutItem")


def test_values_are_stored_as_the_hand_marshalled_code_stored_them() -> None:
    assert to_item(
        {
            "s": "x",
            "n": 7,
            "f": 12.5,
            "b": True,
            "bytes": b"\x00\x01",
            "l": ["a", "b"],
            "ss": {"k"},
            "m": {"v": 1, "d": "ab", "old": None},
        }
    ) == {
        "s": {"S": "x"},
        "n": {"N": "7"},
        "f": {"N": "12.5"},
        "b": {"BOOL": True},
        "bytes": {"B": b"\x00\x01"},
        "l": {"L": [{"S": "a"}, {"S": "b"}]},
        "ss": {"SS": ["k"]},
        "m": {"M": {"v": {"N": "1"}, "d": {"S": "ab"}, "old": {"NULL": True}}},
    }
    assert attr(0) == {"N": "0"} and attr({}) == {"M": {}}


def test_values_read_back_with_their_python_types() -> None:
    item = to_item(
        {"n": 7, "f": 12.5, "b": False, "bytes": b"z", "l": ["a"], "ss": {"k"}, "m": {"v": 2}}
    )
    assert from_item(item) == {
        "n": 7,
        "f": 12.5,
        "b": False,
        "bytes": b"z",
        "l": ["a"],
        "ss": {"k"},
        "m": {"v": 2},
    }
    assert type(from_item(item)["n"]) is int and type(get_map(item, "m")["v"]) is int
    assert (get_n(item, "n"), get_opt_n(item, "n"), get_opt_float(item, "f")) == (7, 7, 12.5)
    assert (get_bool(item, "b"), get_bytes(item, "bytes")) == (False, b"z")
    assert (get_str_list(item, "l"), get_str_set(item, "ss"), get_list(item, "l")) == (
        ["a"],
        frozenset({"k"}),
        ["a"],
    )


def test_absent_or_other_typed_attributes_read_as_the_default() -> None:
    item = to_item({"b": True, "s": "x"})
    assert get_s(item, "missing", "d") == "d" and get_s(item, "b") == ""
    assert get_n(item, "b", 3) == 3 and get_opt_n(item, "s") is None
    assert get_bool(item, "s") is None and get_bool(item, "missing") is None
    assert get_str_list(item, "missing") == [] and get_map(item, "s") == {}


def test_a_refused_condition_carries_the_stored_item() -> None:
    held = {"edge_id": {"S": "e-1"}}
    with pytest.raises(ConditionFailed) as caught, translated("store"):
        raise _client_error("ConditionalCheckFailedException", Item=held)
    assert caught.value.item == held
    with pytest.raises(ConditionFailed) as caught, translated("store"):
        raise _client_error("ConditionalCheckFailedException")
    assert caught.value.item == {}


def test_a_cancelled_transaction_carries_its_reasons() -> None:
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Message": "m"}]
    with pytest.raises(TransactionCancelled) as caught, translated("store"):
        raise _client_error("TransactionCanceledException", CancellationReasons=reasons)
    assert caught.value.reasons == ["None", "ConditionalCheckFailed"]


@pytest.mark.parametrize(
    "error",
    [
        _client_error("ProvisionedThroughputExceededException"),
        _client_error("ThrottlingException"),
        _client_error("ResourceNotFoundException"),
        _client_error("ValidationException"),
        EndpointConnectionError(endpoint_url="https://dynamodb"),
    ],
)
def test_everything_else_is_a_storage_error(error: Exception) -> None:
    with pytest.raises(StorageError, match=r"^store unavailable$"), translated("store"):
        raise error


class _Throttled:
    """BatchGetItem that returns one item per call and leaves the rest unprocessed."""

    def __init__(self, unprocessed_after: int) -> None:
        self.calls = 0
        self.unprocessed_after = unprocessed_after

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        rest = RequestItems if self.calls < self.unprocessed_after else {}
        return {"Responses": {"t": [{"k": {"S": str(self.calls)}}]}, "UnprocessedKeys": rest}


def test_unprocessed_keys_are_asked_again_until_done() -> None:
    client = _Throttled(unprocessed_after=3)
    rounds = list(batch_rounds(client, {"t": {"Keys": []}}, "store"))
    assert client.calls == 3 and [r["t"][0]["k"]["S"] for r in rounds] == ["1", "2", "3"]


def test_reads_throttled_throughout_fail_after_a_bounded_number_of_rounds() -> None:
    client = _Throttled(unprocessed_after=10**6)
    with pytest.raises(StorageError, match="store unavailable"):
        list(batch_rounds(client, {"t": {"Keys": []}}, "store"))
    assert client.calls == 8
