"""Convergence you can prove: two nodes, hundreds of block/allow flips over dozens of
devices while the nodes' WebSocket connections are cut at random moments; afterwards
every node decides for every device exactly what the control plane decides.

- Half of the devices are flipped by console overrides (``POST .../override``), the
  other half by MDM check-ins (compromised or not); each flip toggles the device.
- The cutter closes a node's connection from the control plane's side, as an operator
  (or API Gateway itself) can: it finds the node's connection ids in the connections
  table (on the local moto server, through the product's own adapter) and deletes one
  through the WebSocket API's ``DELETE /{stage}/@connections/{id}``. The node backs
  off, reconnects, fetches a delta and reports; pushes sent meanwhile are lost.
- The cluster reports every ``report_interval_s`` = 10 s (the smallest the settings
  allow), set through the cluster settings API.

Afterwards each node's decision (``/diagnostics/decision``: access and the version of
the entry it decided by) must equal the control plane's (the device's entry for this
cluster in ``GET /console/v1/email-devices/{user}/{device}``), and the control plane's
must be what the last flip asked for. The only deadline is a generous one (a few
report intervals); the convergence time is measured and printed in the "system tier
figures" section of the terminal summary (always shown) and in the test's captured
output (``-rA``). The run is seeded: ``SEG_E2E_SEED=<n>`` replays a run's schedule.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import boto3
import httpx
import pytest

from lambdas import resources
from lambdas.adapters.dynamodb_connections import DynamoDbConnections
from seg_cli.demo import DemoDevice, checkin, enroll
from seg_local.aws_events import REGION
from seg_local.controlplane import FAKE_AWS_ENV
from seg_local.provision import table_name
from seg_local.stack import Node, Stack

from .conftest import eventually, metrics, report_figure, serve, start_stack

REPORT_INTERVAL_S = 10  # ClusterSettings' minimum
DEVICES = 24  # half flipped by console overrides, half by MDM check-ins
FLIPS = 200
CUTS = 100
MEAN_FLIP_GAP_S = 0.08
MEAN_CUT_GAP_S = 0.15
MAX_BACKLOG = 10  # flips the control plane may be behind before the flipper waits
MAX_THROTTLE_S = 2.0  # (a bound on each wait: the count is an estimate)
DEADLINE_S = 3 * REPORT_INTERVAL_S  # generous: the claim is one report interval


@dataclass(frozen=True)
class Device:
    user: str
    device_id: str
    by_mdm: bool  # flipped by MDM check-ins (else by console overrides)

    @property
    def demo(self) -> DemoDevice:
        return DemoDevice(self.user, self.device_id, "iPhone", "iPhone 15", "iOS 18")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    # Quick reconnects, so that a cut node is back (and can be cut again) within a
    # second; HTTPS/WSS as with API Gateway.
    s = start_stack(
        tmp_path_factory,
        nodes=2,
        control_plane_tls=True,
        external_moto=True,  # its own process (and core): the control plane is busy
        gateway_env={"SEG_GW_BACKOFF_INITIAL_S": "0.2", "SEG_GW_BACKOFF_MAX_S": "1"},
    )
    yield from serve(s, request)


# --- the control plane's and the nodes' decisions ------------------------------------


def _cp_decision(http: httpx.Client, cluster_id: str, device: Device) -> tuple[str, int] | None:
    r = http.get(f"/console/v1/email-devices/{device.user}/{device.device_id}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    for entry in r.json()["entries"]:
        if entry["cluster_id"] == cluster_id:
            return str(entry["access"]), int(entry["version"])
    return None


def _node_decision(http: httpx.Client, node: Node, device: Device) -> tuple[str, int] | None:
    r = http.get(
        node.admin_url + "/diagnostics/decision",
        params={"user": device.user, "device_id": device.device_id},
    )
    r.raise_for_status()
    body = r.json()
    entry = body.get("entry")
    return (str(body["access"]), int(entry["version"])) if entry else None


@dataclass
class Survey:
    """One look at every device on the control plane and on every node."""

    control_plane: dict[Device, tuple[str, int] | None]
    nodes: dict[str, dict[Device, tuple[str, int] | None]]

    def disagreements(self) -> list[str]:
        return [
            f"{node_id} {d.user}/{d.device_id}: node {seen}, control plane {self.control_plane[d]}"
            for node_id, seen_by_node in self.nodes.items()
            for d, seen in seen_by_node.items()
            if seen != self.control_plane[d]
        ]

    def wrong_on_control_plane(self, intended: dict[Device, str]) -> list[str]:
        return [
            f"{d.user}/{d.device_id}: wanted {want}, control plane {self.control_plane[d]}"
            for d, want in intended.items()
            if (self.control_plane[d] or ("", 0))[0] != want
        ]


def survey(stack: Stack, devices: list[Device], pool: ThreadPoolExecutor) -> Survey:
    with stack.console() as cp, httpx.Client(timeout=5) as admin:
        cp_future = {d: pool.submit(_cp_decision, cp, stack.cluster_id, d) for d in devices}
        node_future = {
            n.node_id: {d: pool.submit(_node_decision, admin, n, d) for d in devices}
            for n in stack.nodes
        }
        return Survey(
            {d: f.result() for d, f in cp_future.items()},
            {nid: {d: f.result() for d, f in fs.items()} for nid, fs in node_future.items()},
        )


# --- flips and cuts --------------------------------------------------------------------


@dataclass
class Flipper:
    stack: Stack
    devices: list[Device]
    rng: random.Random
    intended: dict[Device, str] = field(default_factory=dict)
    flips: int = 0
    last_at: float = 0.0

    def flip(self, http: httpx.Client, device: Device) -> None:
        access = {"block": "allow", "allow": "block"}.get(self.intended.get(device, ""), "")
        access = access or self.rng.choice(("block", "allow"))
        if device.by_mdm:
            checkin(self.stack, device.demo, compromised=access == "block")
        else:
            r = http.post(
                f"/console/v1/email-devices/{device.user}/{device.device_id}/override",
                json={"action": access, "reason": f"flip {self.flips}"},
            )
            assert r.status_code == 202, r.text
        self.intended[device] = access
        self.flips += 1
        self.last_at = time.monotonic()

    def run(self, count: int) -> None:
        """Every device once (in a random order), then devices at random, at random
        moments; never more than ``MAX_BACKLOG`` flips ahead of what the control plane
        has committed (each flip commits one version), so that the control plane's own
        queue does not dominate the convergence time measured after the last flip."""
        order = self.rng.sample(self.devices, len(self.devices))
        order += [self.rng.choice(self.devices) for _ in range(count - len(order))]
        with self.stack.console() as http:
            base = _committed_version(http, self.stack.cluster_id)
            for device in order:
                waited_until = time.monotonic() + MAX_THROTTLE_S
                while (
                    self.flips % 5 == 0  # (each look costs the busy control plane too)
                    and self.flips - (_committed_version(http, self.stack.cluster_id) - base)
                    > MAX_BACKLOG
                    and time.monotonic() < waited_until
                ):
                    time.sleep(0.25)
                self.flip(http, device)
                time.sleep(self.rng.expovariate(1 / MEAN_FLIP_GAP_S))


class Cutter(threading.Thread):
    """Cuts the nodes' WebSocket connections from the control plane's side at random
    moments: at each, a cut is due while fewer than ``minimum`` x (the flipper's
    progress) have been made, so the cuts spread over the whole flip phase; after it,
    the cutter makes up any shortfall and stops."""

    def __init__(self, stack: Stack, rng: random.Random, minimum: int, progress: Flipper) -> None:
        super().__init__(name="cutter", daemon=True)
        self.stack, self.rng, self.minimum, self.progress = stack, rng, minimum, progress
        self.cuts: dict[str, int] = {n.node_id: 0 for n in stack.nodes}
        self.gone = 0  # listed but already closed (the table lags the sockets)
        self.last_at = 0.0
        self.stop_requested = threading.Event()
        self.error: BaseException | None = None
        endpoints = stack.endpoints
        session = boto3.session.Session(
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )
        self.connections = DynamoDbConnections(
            table_name("seg-local", resources.CONNECTIONS),
            session.client("dynamodb", endpoint_url=endpoints["moto_endpoint"]),
        )
        assert stack.tls is not None
        self.management = session.client(
            "apigatewaymanagementapi",
            endpoint_url=endpoints["management_endpoint"],
            verify=str(stack.tls.ca_cert),
        )

    @property
    def total(self) -> int:
        return sum(self.cuts.values())

    def cut_one(self) -> bool:
        node_id = self.rng.choice(sorted(self.cuts))
        listed = [
            c.connection_id
            for c in self.connections.list_for_cluster(self.stack.cluster_id)
            if c.node_id == node_id
        ]
        for connection_id in listed:
            try:
                self.management.delete_connection(ConnectionId=connection_id)
            except self.management.exceptions.GoneException:
                self.gone += 1
                continue
            self.cuts[node_id] += 1
            self.last_at = time.monotonic()
            return True
        return False  # reconnecting right now: try again later

    def due(self) -> bool:
        done = 1.0 if self.stop_requested.is_set() else self.progress.flips / FLIPS
        return self.total < self.minimum * done + 1

    def run(self) -> None:
        try:
            while not (self.stop_requested.is_set() and self.total >= self.minimum):
                time.sleep(self.rng.expovariate(1 / MEAN_CUT_GAP_S))
                if self.due():
                    self.cut_one()
        except BaseException as exc:  # reported by the test
            self.error = exc


# --- the test --------------------------------------------------------------------------


def _set_report_interval(stack: Stack, seconds: int) -> None:
    with stack.console() as http:
        r = http.get(f"/console/v1/clusters/{stack.cluster_id}")
        r.raise_for_status()
        settings = {**r.json()["settings"], "report_interval_s": seconds}
        r = http.put(f"/console/v1/clusters/{stack.cluster_id}/settings", json=settings)
        assert r.status_code == 200, r.text


def _node_reports(stack: Stack) -> list[dict[str, object]]:
    with stack.console() as http:
        r = http.get(f"/console/v1/clusters/{stack.cluster_id}/nodes")
        r.raise_for_status()
        reports: list[dict[str, object]] = r.json()
        return reports


def _committed_version(http: httpx.Client, cluster_id: str) -> int:
    r = http.get(f"/console/v1/clusters/{cluster_id}")
    r.raise_for_status()
    return int(r.json()["policy_version"])


HEALING = {
    "connects": "seg_gateway_push_connects_total",
    "deltas": 'seg_gateway_policy_fetches_total{outcome="delta"}',
    "snapshots": 'seg_gateway_policy_fetches_total{outcome="snapshot"}',
    "digest mismatches": "seg_gateway_policy_digest_mismatch_total",
}


def _healing(stack: Stack) -> dict[str, dict[str, int]]:
    """How each node got there: what it counted of each of ``HEALING``."""
    return {
        n.node_id: {what: int(metrics(n)[name]) for what, name in HEALING.items()}
        for n in stack.nodes
    }


def test_every_node_decides_as_the_control_plane_after_flips_and_cuts(stack: Stack) -> None:
    seed = int(os.environ.get("SEG_E2E_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"convergence e2e: seed {seed} (replay with SEG_E2E_SEED={seed})")
    rng = random.Random(seed)
    tag = f"{seed:08x}"[:8]
    devices = [
        Device(f"conv{tag}u{i:02d}", f"conv{tag}d{i:02d}", i % 2 == 1) for i in range(DEVICES)
    ]
    _set_report_interval(stack, REPORT_INTERVAL_S)
    enrolled = [d for d in devices if d.by_mdm]
    for device in enrolled:
        enroll(stack, device.demo)
    with stack.console() as http:  # so that the flipper counts only its own versions
        eventually(
            lambda: all(_cp_decision(http, stack.cluster_id, d) for d in enrolled),
            timeout=30,
            what="the enrolled devices have entries",
        )

    before = _healing(stack)
    flipper = Flipper(stack, devices, rng)
    cutter = Cutter(stack, random.Random(rng.random()), CUTS, flipper)
    started = time.monotonic()
    cutter.start()
    try:
        flipper.run(FLIPS)
    finally:
        cutter.stop_requested.set()
        cutter.join(60)
    assert cutter.error is None, f"the cutter failed: {cutter.error!r}"
    assert not cutter.is_alive(), "the cutter did not finish its cuts"
    assert flipper.flips >= FLIPS and cutter.total >= CUTS
    last_action = max(flipper.last_at, cutter.last_at)
    churn_s = last_action - started

    settled_at: float | None = None  # the control plane shows every last flip
    last: Survey | None = None
    surveys, surveying_s = 0, 0.0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while time.monotonic() - last_action < DEADLINE_S:
            began = time.monotonic()
            last = survey(stack, devices, pool)
            now = time.monotonic()
            surveys, surveying_s = surveys + 1, surveying_s + now - began
            if settled_at is None and not last.wrong_on_control_plane(flipper.intended):
                settled_at = now
            if settled_at is not None and not last.disagreements():
                break
            time.sleep(0.05)
    assert last is not None
    assert not last.wrong_on_control_plane(flipper.intended), (
        f"the control plane never applied every flip within {DEADLINE_S} s: "
        f"{last.wrong_on_control_plane(flipper.intended)[:5]}"
    )
    assert not last.disagreements(), (
        f"nodes still disagree with the control plane {DEADLINE_S} s after the last "
        f"flip/cut: {last.disagreements()[:5]}"
    )
    assert settled_at is not None
    converged_at = time.monotonic()
    converged_s = converged_at - last_action

    # And every node proves it: its next report's digest is found in sync at W.
    with stack.console() as http:
        committed = _committed_version(http, stack.cluster_id)
    eventually(
        lambda: (
            all(
                r["digest_check"] == "in_sync" and int(str(r["policy_version"])) >= committed
                for r in _node_reports(stack)
            )
            and len(_node_reports(stack)) == len(stack.nodes)
        ),
        timeout=DEADLINE_S,
        what=f"every node reports an in-sync digest at version >= {committed}",
    )
    verified_s = time.monotonic() - last_action
    after = _healing(stack)
    healing = {
        node: {what: after[node][what] - before[node][what] for what in HEALING} for node in after
    }

    lines = [
        f"convergence e2e (seed {seed}): {flipper.flips} flips over {DEVICES} devices and "
        f"{cutter.total} WebSocket cuts ({cutter.cuts}; {cutter.gone} listed ids already "
        f"gone) in {churn_s:.1f} s",
        f"  control plane applied every last flip {settled_at - last_action:.2f} s after "
        f"the last flip/cut",
        f"  every node decided as the control plane {converged_s:.2f} s after the last "
        f"flip/cut (report interval {REPORT_INTERVAL_S} s; one look at all "
        f"{DEVICES} devices on the control plane and both nodes took "
        f"{surveying_s / max(surveys, 1):.2f} s)",
        f"  every node reported an in-sync digest at version >= {committed} "
        f"{verified_s:.2f} s after the last flip/cut",
        f"  how the nodes healed: {healing}",
    ]
    for line in lines:
        print(line)
        report_figure(line)
