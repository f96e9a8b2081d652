"""Plays DynamoDB's Time to Live, which moto never enforces: every table declared with a
``ttl_attribute`` in ``lambdas.resources`` is swept periodically and items whose TTL (epoch
seconds) has passed are deleted. Without it a long-running local system would keep every
idempotency record and device event forever, and stale WebSocket connections that a
crashed control plane never saw close would linger (in AWS their TTL removes them)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from lambdas import resources

log = logging.getLogger(__name__)


def sweep_table(dynamodb: Any, table: resources.Table, name: str, now: float) -> int:
    """Delete the expired items of one table; returns how many."""
    assert table.ttl_attribute is not None
    keys = [table.partition.name] + ([table.sort.name] if table.sort else [])
    names = {f"#k{i}": k for i, k in enumerate(keys)} | {"#ttl": table.ttl_attribute}
    deleted = 0
    kwargs: dict[str, Any] = {
        "TableName": name,
        "FilterExpression": "#ttl < :now",
        "ProjectionExpression": ", ".join(names),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
    }
    while True:
        page = dynamodb.scan(**kwargs)
        for item in page.get("Items", []):
            dynamodb.delete_item(TableName=name, Key={k: item[k] for k in keys})
            deleted += 1
        if "LastEvaluatedKey" not in page:
            return deleted
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class TtlSweeper:
    def __init__(self, dynamodb: Any, tables: Mapping[str, str], interval_s: float = 60.0):
        self._dynamodb = dynamodb
        self._tables = [(t, tables[t.id]) for t in resources.TABLES if t.ttl_attribute]
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ttl-sweeper", daemon=True)
        self.deleted = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        count = sum(sweep_table(self._dynamodb, t, name, now) for t, name in self._tables)
        self.deleted += count
        return count

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("TTL sweep failed; retrying next interval")
