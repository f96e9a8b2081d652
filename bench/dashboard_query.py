"""The console's read cost at tenant scale: the email-device list (every filter, search
and sort, with exact totals), the summary and the CSV export, over the in-memory roster.

Run:  .venv/bin/python bench/dashboard_query.py [--devices 250000] [--mode inproc server]
                                                [--reps 21]

For each mode and size: publishes a synthetic fleet of N devices as the roster
(``seg_local.fleet``: 70 % allowed, 20 % blocked, 5 % quarantined, 5 % unknown-device
blocks, last seen over 90 days, half enrolled in the MDM, two clusters, three nodes) into
moto, builds the API (``TestClient``: routing, validation and JSON included) and times:

- cold start: the first request of a new warm function (reads and decodes the snapshot);
- each query type below, ``--reps`` times after a warm-up: p50 / p95 / max in ms;
- "after 100 changes": a payload batch of 100 devices journalled before each request, the
  roster refreshed for it (what a request costs on a busy tenant).

Modes: ``inproc`` is moto's in-process mock (``mock_aws``); ``server`` is
``moto.server.ThreadedMotoServer`` on 127.0.0.1, as in the local runtime (``seg up``).
Also prints the DynamoDB calls each request made (the figure that carries over to AWS).
Goal: p95 <= 500 ms for every query type at 250,000 devices.
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
import uuid
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
from lambdas.adapters.dynamodb_email_devices import DynamoDbEmailDevices  # noqa: E402
from lambdas.adapters.dynamodb_roster import DynamoDbRoster  # noqa: E402
from lambdas.api.app import create_app  # noqa: E402
from lambdas.api.deps import Container, clock  # noqa: E402
from lambdas.domain import email_view  # noqa: E402
from lambdas.settings import parse_settings  # noqa: E402
from lambdas.usecases.roster import journal_observations  # noqa: E402
from seg_contract import AccessEvent  # noqa: E402
from seg_local import fleet  # noqa: E402
from seg_local.provision import provision  # noqa: E402

NOW = datetime.now(UTC).replace(microsecond=0)
TOKEN = "bench-viewer-token-" + "x" * 24


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


class CallCounter:
    """Counts the AWS API calls boto3 makes (per operation)."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def changes(journal: DynamoDbRoster, n: int) -> Callable[[], None]:
    """Journal a payload batch of ``n`` fleet devices seen just now (a busy minute)."""
    counter = iter(range(10**9))

    def make() -> None:
        round_ = next(counter)
        observations = []
        for k in range(n):
            i = (round_ * n + k) * 7919 % 1000
            event = AccessEvent(
                event_id=uuid.uuid4().hex,
                at=datetime.now(UTC),
                node_id="node-1",
                user=fleet.user_of(i),
                device_id=fleet.device_of(i),
                device_type="iPhone",
                command="Ping",
                decision="allow",
                reason="compliant",
                rule="entry",
            )
            obs = email_view.observation(event, fleet.CLUSTERS[0])
            assert obs is not None
            observations.append(obs)
        journal_observations(journal, observations)

    return make


def run(mode: str, n: int, reps: int) -> None:
    with moto_clients(mode) as (dynamodb, sqs):
        provisioned = provision(dynamodb, sqs, prefix=f"bench{n}")
        env = {
            **provisioned.env(),
            resources.ENV_CONSOLE_AUTH: "static",
            resources.ENV_CONSOLE_TOKEN_SHA256: hashlib.sha256(b"unused-admin").hexdigest(),
            resources.ENV_CONSOLE_VIEWER_TOKEN_SHA256: hashlib.sha256(TOKEN.encode()).hexdigest(),
        }
        settings = parse_settings(env)
        roster = DynamoDbRoster(settings.table("roster"), dynamodb)
        view = DynamoDbEmailDevices(
            settings.table("email_devices"),
            dynamodb,
            devices_table=settings.table("devices"),
            overrides_table=settings.table("manual_overrides"),
        )
        started = time.perf_counter()
        head = fleet.publish(snapshots=roster, journal=roster, view=view, n=n, now=NOW)
        published_s = time.perf_counter() - started
        for minute in range(60):
            view.add_activity(
                email_view.ActivityCount(
                    email_view.minute_bucket(NOW - timedelta(minutes=minute)), 40, 8
                ),
                f"{minute:016x}",
            )
        counter = CallCounter(dynamodb)
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def client(refresh_s: float) -> TestClient:
            container = Container(settings, dynamodb=dynamodb, sqs=sqs, roster_refresh_s=refresh_s)
            app = create_app(container=container)
            app.dependency_overrides[clock] = lambda: NOW
            return TestClient(app)

        with client(1.0) as http:

            def get(path: str, **params: Any) -> Any:
                response = http.get(path, params=params, headers=headers)
                assert response.status_code == 200, response.text
                return response

            start = time.perf_counter()
            first = get("/console/v1/email-devices").json()
            cold_ms = (time.perf_counter() - start) * 1000
            assert first["total"] == n, first["total"]
            later = get("/console/v1/email-devices", limit=450).json()["next_cursor"]
            oldest = fleet.user_of(n - 3)
            print(
                f"\n== {mode}, {n:,} devices: snapshot {head.chunks} chunks, "
                f"{head.rows:,} rows, published in {published_s:.1f} s; "
                f"cold start (first request) {cold_ms:,.0f} ms =="
            )
            devices = "/console/v1/email-devices"
            cases: list[tuple[str, Callable[[], Any]]] = [
                ("first page", lambda: get(devices)),
                ("10th page", lambda: get(devices, cursor=later)),
                ("access_state=block", lambda: get(devices, access_state="block")),
                (
                    "compliance=non_compliant",
                    lambda: get(devices, compliance_state="non_compliant"),
                ),
                ("search user (1 match)", lambda: get(devices, q=oldest)),
                ("search model 'pixel'", lambda: get(devices, q="pixel")),
                ("sort=user asc", lambda: get(devices, sort="user", order="asc")),
                ("sort=model, blocked", lambda: get(devices, sort="model", access_state="block")),
                (
                    "cluster + node filter",
                    lambda: get(devices, cluster_id=fleet.CLUSTERS[1], node="node-2"),
                ),
                ("not seen for 30 days", lambda: get(devices, not_seen_days=30, sort="last_seen")),
                ("summary", lambda: get("/console/v1/email-devices/summary")),
                (
                    "export part (10,000 rows)",
                    lambda: get(f"{devices}/export", access_state="allow"),
                ),
            ]
            results = [measure(name, fn, reps, counter) for name, fn in cases]
        with client(0.0) as http:
            http.get("/console/v1/email-devices", headers=headers)  # load
            make = changes(roster, 100)

            def busy() -> Any:
                response = http.get("/console/v1/email-devices", headers=headers)
                assert response.status_code == 200
                return response

            results.append(measure("first page after 100 changes", busy, reps, counter, make))
        print(f"  {'query':32s} {'p50':>8s} {'p95':>8s} {'max':>8s}   DynamoDB calls per request")
        for name, p50, p95, worst, calls in results:
            flag = "" if p95 <= 500 else "   <-- over the 500 ms goal"
            print(f"  {name:32s} {p50:8.1f} {p95:8.1f} {worst:8.1f}   {calls}{flag}")


def measure(
    name: str,
    fn: Callable[[], Any],
    reps: int,
    counter: CallCounter,
    before: Callable[[], None] | None = None,
) -> tuple[str, float, float, float, str]:
    if before:
        before()
    fn()  # warm (sort keys of a new column are built on first use)
    samples = []
    counter.calls.clear()
    for _ in range(reps):
        if before:
            before()
            counter.calls.clear()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    calls = ", ".join(f"{op} {c}" for op, c in sorted(counter.calls.items())) or "none"
    if before:
        calls = f"{calls} (last request)"
    else:
        calls = (
            ", ".join(f"{op} {c / reps:.1f}" for op, c in sorted(counter.calls.items())) or "none"
        )
    return name, statistics.median(samples), percentile(samples, 0.95), max(samples), calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[250_000])
    parser.add_argument(
        "--mode", choices=("inproc", "server"), nargs="+", default=["inproc", "server"]
    )
    parser.add_argument("--reps", type=int, default=21)
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
