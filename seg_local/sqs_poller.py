"""Plays the Lambda SQS event-source mapping: long-poll a queue, invoke the function
with a real SQS event, delete what succeeded.

Semantics kept from AWS (Lambda developer guide, "Using Lambda with Amazon SQS"):
- batches of up to the function's declared ``batch_size``;
- with ``ReportBatchItemFailures`` the response's ``batchItemFailures`` name the records
  that failed: every other record is deleted, the failed ones stay in flight and come
  back after the queue's visibility timeout; once received ``maxReceiveCount`` times SQS
  (here moto) moves them to the dead-letter queue;
- an exception, or a failure list naming a message that was not in the batch, fails the
  whole batch (nothing is deleted);
- FIFO queues: SQS hands out one message group at a time and this poller handles one
  batch at a time, so each group is processed in order.

One thread per mapping; it survives errors of the handler and of the queue endpoint
(logged, retried with a short backoff), so the runtime can run for hours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seg_local.aws_events import LambdaContext, failed_message_ids, sqs_event

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class PollerStats:
    invocations: int = 0
    deleted: int = 0
    failed: int = 0
    errors: int = 0


class SqsPoller:
    def __init__(
        self,
        *,
        name: str,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        batch_size: int = 10,
        timeout_s: int = 30,
        memory_mb: int = 512,
        wait_time_s: int = 1,
        visibility_timeout_s: int = 30,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError(f"{name}: batch_size must be 1..10 (SQS ReceiveMessage limit)")
        self.name = name
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb
        # A short long-poll keeps shutdown prompt; moto answers as soon as a message
        # arrives, so latency does not depend on it.
        self._wait_time_s = wait_time_s
        self._visibility_timeout_s = visibility_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._short_poll_until = 0.0
        self.stats = PollerStats()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sqs-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop after the current receive (at most ``wait_time_s``) and batch."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.poll_once()
                backoff = 0.1
            except Exception:  # a dead poller would silently stop the product
                self.stats.errors += 1
                log.exception("poller %s: receive/delete failed; retrying", self.name)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _receive(self) -> list[dict[str, Any]]:
        # While failed messages are in flight, moto's long poll spins on the messages it
        # may not hand out (their group is locked, or they are invisible): poll briefly
        # instead until they are visible again.
        short = time.monotonic() < self._short_poll_until
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=0 if short else self._wait_time_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        if short and not messages:
            self._stop.wait(0.2)
        return messages

    def poll_once(self) -> int:
        """Receive one batch and process it; returns how many messages it received."""
        messages = self._receive()
        if not messages:
            return 0
        self.process(messages)
        return len(messages)

    def process(self, messages: list[dict[str, Any]]) -> None:
        event = sqs_event(messages, self._queue_arn)
        context = LambdaContext(self.name, self._memory_mb, self._timeout_s)
        self.stats.invocations += 1
        try:
            response = self._handler(event, context)
        except Exception:
            log.exception("function %s raised: the whole batch will be retried", self.name)
            failed = {m["MessageId"] for m in messages}
        else:
            failed = failed_message_ids(response)
            if failed - {m["MessageId"] for m in messages}:
                log.error(
                    "function %s reported failures for messages not in the batch: "
                    "the whole batch will be retried",
                    self.name,
                )
                failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            result = self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
            if result.get("Failed"):
                # e.g. the handler outlived the visibility timeout: SQS redelivers them,
                # and the handlers are idempotent, as on AWS.
                log.warning(
                    "function %s: %d processed messages could not be deleted and will be "
                    "redelivered",
                    self.name,
                    len(result["Failed"]),
                )
        self.stats.deleted += len(done)
        if failed:
            self.stats.failed += len(failed)
            self._short_poll_until = time.monotonic() + self._visibility_timeout_s + 1
