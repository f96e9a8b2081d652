"""One local control plane for the module, with small recording handlers in place of
the real ones (the runtime's job is delivery, shapes and AWS semantics, not logic)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from seg_local.controlplane import LocalControlPlane, Options
from seg_local.websocket_api import Limits


@dataclass
class Recorder:
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cond: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)

    def add(self, name: str, event: dict[str, Any]) -> None:
        with self.cond:
            self.events.setdefault(name, []).append(event)
            self.cond.notify_all()

    def wait_for(self, name: str, predicate: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.events.get(name, [])), timeout)
            events = list(self.events.get(name, []))
        assert ok, f"{name}: condition not met; got {len(events)} events"
        return events


def make_handlers(rec: Recorder) -> dict[str, Any]:
    def sqs_handler(name: str) -> Any:
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            rec.add(name, event)
            failures = [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if json.loads(r["body"]).get("fail")
            ]
            return {"batchItemFailures": failures}

        return handler

    def connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
        rec.add("connect", event)
        if event["headers"].get("Authorization") != "Bearer good":
            return {"statusCode": 401, "body": json.dumps({"detail": "bad credential"})}
        return {"statusCode": 200}

    def default(event: dict[str, Any], context: Any) -> dict[str, Any]:
        rec.add("default", event)
        if event["body"] == "silent":
            return {"statusCode": 200}
        return {"statusCode": 200, "body": json.dumps({"echo": event["body"]})}

    def disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
        rec.add("disconnect", event)
        return {"statusCode": 200}

    def scheduled(event: dict[str, Any], context: Any) -> None:
        rec.add("scheduled", event)

    return {
        "compliance_reader": sqs_handler("compliance_reader"),
        "payload_reader": sqs_handler("payload_reader"),
        "ws_connect": connect,
        "ws_disconnect": disconnect,
        "ws_default": default,
        "scheduled_checkin": scheduled,
    }


@dataclass
class Runtime:
    cp: LocalControlPlane
    rec: Recorder


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    rec = Recorder()
    api = Starlette(routes=[Route("/health", lambda r: JSONResponse({"status": "ok"}))])
    cp = LocalControlPlane(
        Options(
            prefix="seg-rt",
            schedule_interval_s=0.5,
            visibility_timeout_s={"compliance": 1, "payload": 1},
            ws_limits=Limits(max_connection_s=8.0, idle_timeout_s=3.0, max_message_bytes=4096),
            handler_overrides=make_handlers(rec),
            api_app=api,
        )
    )
    cp.start()
    try:
        yield Runtime(cp, rec)
    finally:
        cp.stop()
