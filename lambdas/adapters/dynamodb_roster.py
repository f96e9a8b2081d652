"""The roster's snapshots and journal on the roster table (``pk``, ``sk``).

- Journal entries: ``pk = j#<minute>#<shard>``, ``sk = <instant>#<random>``; reading
  "since t" queries each (minute, shard) from t's minute to now with ``sk >= t``,
  consistently. Shards spread a busy tenant's writes over several partitions. Entries
  expire after the journal's TTL.
- Snapshots: the bytes in chunks of ``CHUNK_BYTES`` under ``pk = s#<generation>``
  (``sk = 0000``, ``0001``, ...), and one head item (``pk = sk = head``) naming the
  published generation. Publishing writes the chunks, then moves the head
  (conditionally, so two compactors cannot both win), then deletes the previous
  generation's chunks. A reader holding an old head finds its chunks gone and reads the
  head again.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3

from lambdas.adapters.dynamodb_support import (
    ConditionFailed,
    Item,
    batch_get,
    expression_values,
    get_bytes,
    get_n,
    get_s,
    paged,
    to_item,
    translated,
)
from lambdas.domain.errors import Conflict, StorageError
from lambdas.domain.timefmt import format_instant, to_utc
from lambdas.ports import JournalEntry, SnapshotHead

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STORE = "roster store"
CHUNK_BYTES = 350_000  # under DynamoDB's 400 KB item limit with room for the keys
JOURNAL_SHARDS = 4
_HEAD = to_item({"pk": "head", "sk": "head"})


def _minutes(since: datetime, until: datetime) -> list[str]:
    start = to_utc(since).replace(second=0, microsecond=0)
    end = to_utc(until)
    out: list[str] = []
    while start <= end:
        out.append(format_instant(start)[:16])
        start += timedelta(minutes=1)
    return out


class DynamoDbRoster:
    """Both ports (``RosterJournal`` and ``RosterSnapshots``) on one table."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        *,
        journal_ttl: timedelta = timedelta(hours=1),
        shards: int = JOURNAL_SHARDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._table = table_name
        self._client: DynamoDBClient = client or boto3.client("dynamodb")
        self._ttl = journal_ttl
        self._shards = shards
        self._clock = clock

    # --- journal ---------------------------------------------------------------------

    def now(self) -> datetime:
        return to_utc(self._clock())

    def append(self, kind: str, data: bytes) -> None:
        now = self.now()
        seq = f"{format_instant(now)}#{secrets.token_hex(6)}"
        shard = secrets.randbelow(self._shards)
        with translated(STORE):
            self._client.put_item(
                TableName=self._table,
                Item=to_item(
                    {
                        "pk": f"j#{seq[:16]}#{shard}",
                        "sk": seq,
                        "kind": kind,
                        "data": data,
                        "expires_at": int((to_utc(now) + self._ttl).timestamp()),
                    }
                ),
            )

    def read_since(self, since: datetime) -> list[JournalEntry]:
        lower = format_instant(since)
        found: list[JournalEntry] = []
        for minute in _minutes(since, self.now()):
            for shard in range(self._shards):
                found.extend(
                    JournalEntry(
                        seq=get_s(item, "sk"),
                        kind=get_s(item, "kind"),
                        data=get_bytes(item, "data"),
                    )
                    for item in paged(
                        self._client,
                        "query",
                        STORE,
                        TableName=self._table,
                        KeyConditionExpression="pk = :pk AND sk >= :since",
                        ExpressionAttributeValues=expression_values(
                            {":pk": f"j#{minute}#{shard}", ":since": lower}
                        ),
                        ConsistentRead=True,
                    )
                )
        found.sort(key=lambda e: e.seq)
        return found

    # --- snapshots -------------------------------------------------------------------

    def head(self) -> SnapshotHead | None:
        with translated(STORE):
            item = self._client.get_item(TableName=self._table, Key=_HEAD, ConsistentRead=True).get(
                "Item"
            )
        return _head(dict(item)) if item else None

    def read(self, head: SnapshotHead) -> bytes | None:
        keys = [
            to_item({"pk": f"s#{head.generation}", "sk": f"{i:04d}"}) for i in range(head.chunks)
        ]
        parts = {
            get_s(item, "sk"): get_bytes(item, "data")
            for item in batch_get(self._client, self._table, keys, STORE)
        }
        if len(parts) != head.chunks:
            return None
        data = b"".join(parts[f"{i:04d}"] for i in range(head.chunks))
        if zlib.crc32(data) != head.checksum:
            return None
        return data

    def publish(
        self, data: bytes, *, epoch: str, watermark: str, rows: int, now: datetime
    ) -> SnapshotHead:
        previous = self.head()
        generation = f"{format_instant(now)}#{secrets.token_hex(4)}"
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        with translated(STORE):
            for i, chunk in enumerate(chunks):
                self._client.put_item(
                    TableName=self._table,
                    Item=to_item({"pk": f"s#{generation}", "sk": f"{i:04d}", "data": chunk}),
                )
        head = SnapshotHead(
            generation=generation,
            epoch=epoch,
            watermark=watermark,
            chunks=len(chunks),
            rows=rows,
            written_at=format_instant(now),
            checksum=zlib.crc32(data),
        )
        item: Item = {
            **_HEAD,
            **to_item(
                {
                    "generation": generation,
                    "epoch": epoch,
                    "watermark": watermark,
                    "chunks": len(chunks),
                    "rows": rows,
                    "crc": head.checksum,
                    "written_at": head.written_at,
                }
            ),
        }
        condition = "attribute_not_exists(pk)" if previous is None else "generation = :previous"
        values = {} if previous is None else expression_values({":previous": previous.generation})
        try:
            with translated(STORE):
                kwargs: dict[str, Any] = {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": condition,
                }
                if values:
                    kwargs["ExpressionAttributeValues"] = values
                self._client.put_item(**kwargs)
        except ConditionFailed:
            self._delete_generation(generation, len(chunks))
            raise Conflict("another roster snapshot was published meanwhile") from None
        if previous is not None:
            self._delete_generation(previous.generation, previous.chunks)
        return head

    def _delete_generation(self, generation: str, chunks: int) -> None:
        try:
            with translated(STORE):
                for i in range(chunks):
                    self._client.delete_item(
                        TableName=self._table,
                        Key=to_item({"pk": f"s#{generation}", "sk": f"{i:04d}"}),
                    )
        except StorageError:
            pass  # orphaned chunks cost storage only; the next publish cannot see them


def _head(item: Item) -> SnapshotHead:
    return SnapshotHead(
        generation=get_s(item, "generation"),
        epoch=get_s(item, "epoch"),
        watermark=get_s(item, "watermark"),
        chunks=get_n(item, "chunks"),
        rows=get_n(item, "rows"),
        written_at=get_s(item, "written_at"),
        checksum=get_n(item, "crc"),
    )
