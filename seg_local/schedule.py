"""Plays an EventBridge rule with a ``rate(N minutes)`` schedule: invoke a function
with a ``Scheduled Event`` every interval, one invocation at a time (the declared
function has a reserved concurrency of 1)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from seg_local.aws_events import LambdaContext, scheduled_event

log = logging.getLogger(__name__)


class ScheduleTimer:
    def __init__(
        self,
        *,
        name: str,
        handler: Callable[[dict[str, Any], Any], Any],
        interval_s: float,
        timeout_s: int = 120,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"{name}: the schedule interval must be > 0 seconds")
        self.name = name
        self._handler = handler
        self.interval_s = interval_s
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.invocations = 0
        self.errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"schedule-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def fire(self) -> Any:
        """Invoke the function once now (what one tick of the rule does)."""
        self.invocations += 1
        event = scheduled_event(f"seg-local-{self.name}", datetime.now(UTC))
        return self._handler(event, LambdaContext(self.name, timeout_s=self._timeout_s))

    def _run(self) -> None:
        # Like EventBridge, the first tick comes one interval after the rule exists.
        while not self._stop.wait(self.interval_s):
            try:
                self.fire()
            except Exception:
                self.errors += 1
                log.exception("scheduled function %s raised", self.name)
