"""The dashboard's read cost: the console API's email-device listing and summary on moto.

Run:  .venv/bin/python bench/dashboard_query.py [--devices 1000 5000] [--mode inproc server]
                                                [--reps 9]

For each mode and size, seeds N email devices through the payload reader's adapter (the
same conditional writes the reader makes; states 70 % allow, 20 % block, 5 % quarantine,
5 % unknown-device blocks; last seen spread over two hours), enrolls every other device
in the MDM (half of them compliant) and sets a few overrides, then times requests through
the FastAPI app (``TestClient``, so routing, validation and JSON are included):

- first page: ``GET /console/v1/email-devices`` (default: newest first, 50 rows)
- later page: the 10th page of the default view, through the cursors
- filtered page: ``?access_state=block``
- summary: ``GET /console/v1/email-devices/summary?minutes=60``
- also: ``?compliance_state=compliant``, ``?q=user01``, ``?sort=user&order=asc``

Modes: ``inproc`` is moto's in-process mock (``mock_aws``); ``server`` is
``moto.server.ThreadedMotoServer`` on 127.0.0.1 (an ephemeral port): every DynamoDB call
is an HTTP request, as in the local runtime (``seg up``). Prints the p50 / p90 per request
in ms and the DynamoDB calls each request made (the figure that carries over to AWS).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "SEG",
}.items():
    os.environ.setdefault(_name, _value)

import boto3  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from moto import mock_aws  # noqa: E402

from lambdas import resources  # noqa: E402
from lambdas.adapters.dynamodb_devices import DynamoDbDevices  # noqa: E402
from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices  # noqa: E402
from lambdas.adapters.dynamodb_manual_overrides import DynamoDbManualOverrides  # noqa: E402
from lambdas.api.app import create_app  # noqa: E402
from lambdas.api.deps import Container, clock  # noqa: E402
from lambdas.domain.access import ManualOverride, OverrideAction  # noqa: E402
from lambdas.domain.compliance import ComplianceResult, ComplianceState  # noqa: E402
from lambdas.domain.mdm_events import EnrollmentEvent  # noqa: E402
from lambdas.settings import parse_settings  # noqa: E402
from lambdas.usecases import email_view  # noqa: E402
from seg_contract import AccessEvent  # noqa: E402
from seg_local.provision import provision  # noqa: E402

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
TOKEN = "bench-admin-token-" + "x" * 24
CLUSTER = "c-bench"


@contextmanager
def moto_clients(mode: str) -> Iterator[tuple[Any, Any]]:
    if mode == "inproc":
        with mock_aws():
            yield boto3.client("dynamodb"), boto3.client("sqs")
        return
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - server mode only

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        yield (
            boto3.client("dynamodb", endpoint_url=endpoint),
            boto3.client("sqs", endpoint_url=endpoint),
        )
    finally:
        server.stop()


def _decision(i: int) -> tuple[str, str]:
    bucket = i % 20
    if bucket < 14:
        return "allow", "entry"
    if bucket < 18:
        return "block", "entry"
    if bucket == 18:
        return "quarantine", "entry"
    return "block", "unknown_device"


def seed(n: int, dynamodb: Any, settings: Any) -> None:
    view = DynamoDbEmailDevices(settings.table("email_devices"), dynamodb)
    devices = DynamoDbDevices(settings.table("devices"), dynamodb)
    overrides = DynamoDbManualOverrides(settings.table("manual_overrides"), dynamodb)
    for i in range(n):
        decision, rule = _decision(i)
        at = NOW - timedelta(seconds=(i * 7200) // n)
        event = AccessEvent(
            event_id=hashlib.sha256(f"ev{i}".encode()).hexdigest()[:32],
            at=at,
            node_id=f"node-{i % 3}",
            user=f"user{i:05d}",
            device_id=f"DEV{i:05d}",
            device_type="iPhone",
            user_agent="Apple-iPhone/1",
            command="Sync",
            decision=decision,
            reason=decision,
            rule=rule,
        )
        observation = email_view.observation(event, CLUSTER)
        assert observation is not None
        view.apply_observation(observation)
        if i % 2 == 0:
            mdm_id = f"mdm-{i:05d}"
            devices.apply_enrollment(
                EnrollmentEvent(
                    event_id=f"enr-{i}",
                    occurred_at=NOW - timedelta(days=1),
                    mdm_device_id=mdm_id,
                    user=f"user{i:05d}",
                    eas_device_ids=(f"dev{i:05d}",),
                    platform="iOS",
                    model="iPhone 15",
                    os_version="18.1",
                    managed=True,
                )
            )
            if i % 4 == 0:
                devices.set_compliance(
                    mdm_id, ComplianceResult(ComplianceState.COMPLIANT), NOW - timedelta(hours=1)
                )
        if i % 100 == 0:
            overrides.put(
                ManualOverride(
                    f"user{i:05d}", f"dev{i:05d}", OverrideAction.BLOCK, "bench", "admin", NOW
                )
            )
    for minute in range(60):
        at = NOW - timedelta(minutes=minute)
        view.add_activity(
            email_view.ActivityCount(email_view.minute_bucket(at), 40, 8), f"fp-{minute}"
        )


class CallCounter:
    """Counts the AWS API calls boto3 makes (per operation)."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


def timed(
    fn: Callable[[], Any], reps: int, counter: CallCounter
) -> tuple[float, float, dict[str, int]]:
    if reps >= 5:
        fn()  # warm
    samples = []
    counter.calls.clear()
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    per_request = {op: round(c / reps) for op, c in sorted(counter.calls.items())}
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    return statistics.median(samples), p90, per_request


def run(mode: str, n: int, reps: int) -> None:
    with moto_clients(mode) as (dynamodb, sqs):
        provisioned = provision(dynamodb, sqs, prefix=f"bench{n}")
        env = {
            **provisioned.env(),
            resources.ENV_CONSOLE_AUTH: "static",
            resources.ENV_CONSOLE_TOKEN_SHA256: hashlib.sha256(TOKEN.encode()).hexdigest(),
        }
        settings = parse_settings(env)
        started = time.perf_counter()
        seed(n, dynamodb, settings)
        seeded_s = time.perf_counter() - started
        app = create_app(container=Container(settings, dynamodb=dynamodb, sqs=sqs))
        app.dependency_overrides[clock] = lambda: NOW
        counter = CallCounter(dynamodb)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with TestClient(app) as client:

            def get(path: str, **params: Any) -> dict[str, Any]:
                response = client.get(path, params=params, headers=headers)
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            # The cursor after 9 pages of 50 (a cursor does not depend on the page size).
            cursor = get("/console/v1/email-devices", limit=450)["next_cursor"]
            assert cursor, "too few devices for a 10th page"
            later = cursor
            first = get("/console/v1/email-devices")
            print(
                f"\n== {mode}, {n} devices (seeded in {seeded_s:.1f} s; total={first['total']}, "
                f"p50 of {reps} requests) =="
            )
            cases: list[tuple[str, Callable[[], Any]]] = [
                ("first page", lambda: get("/console/v1/email-devices")),
                ("10th page", lambda: get("/console/v1/email-devices", cursor=later)),
                (
                    "access_state=block",
                    lambda: get("/console/v1/email-devices", access_state="block"),
                ),
                ("summary", lambda: get("/console/v1/email-devices/summary", minutes=60)),
                (
                    "compliance_state=compliant",
                    lambda: get("/console/v1/email-devices", compliance_state="compliant"),
                ),
                ("q=user01", lambda: get("/console/v1/email-devices", q="user01")),
                (
                    "sort=user asc",
                    lambda: get("/console/v1/email-devices", sort="user", order="asc"),
                ),
            ]
            for name, fn in cases:
                p50, p90, calls = timed(fn, reps, counter)
                shown = ", ".join(f"{op} {c}" for op, c in calls.items())
                print(f"  {name:28s} p50 {p50:8.1f} ms   p90 {p90:8.1f} ms   calls: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--mode", choices=("inproc", "server"), nargs="+", default=["inproc", "server"]
    )
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"reproduce: .venv/bin/python bench/dashboard_query.py --devices "
        f"{' '.join(map(str, args.devices))} --mode {' '.join(args.mode)} --reps {args.reps}"
    )
    for mode in args.mode:
        for n in args.devices:
            run(mode, n, args.reps)


if __name__ == "__main__":
    main()
