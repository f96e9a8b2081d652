"""The policy digest on the control plane: what it costs per committed version with a
100,000-device cluster (it is kept incrementally, so: nothing that grows with the
cluster), and what a from-scratch digest of the whole cluster costs (the bootstrap of a
cluster from before committed versions does one, once), next to the node's figures.

Run:  .venv/bin/python bench/policy_digest_control_plane.py  [--devices N] [--commits N]
                                                            [--moto-commits N] [--skip-moto]

Prints (median of the runs; run on an idle machine for stable figures):
- pure: ``policy_digest`` of N entries from scratch (the definition, CPU), the
  bootstrap's first watermark over the same N entries (CPU), and ``walk`` per committed
  version of one change (CPU);
- in memory (the ports' fakes) and on moto (in-process DynamoDB, ~2 ms per call): an
  N-entry cluster is created in the old shape and bootstrapped (the full read of N
  entries + the digest: wall time), then per commit (``write_version``: take a version,
  read the key, one transaction, sign the push and send it to no connection, advance W
  and its digest) and
  per ``advance`` with nothing to do (one consistent read), wall time; on moto also the
  AWS calls per commit by operation (what carries over to DynamoDB; moto's own times do
  not: its transactions copy whole tables);
- the node's side, from ``bench/policy_digest.py``: its full digest of the same policy
  and a push with the digest kept.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)

import boto3  # noqa: E402
from decision_cost import build_snapshot  # noqa: E402  (the same 100,000-device policy)
from moto import mock_aws  # noqa: E402
from policy_digest import cpu_ms, full_digest_ms, push_costs_us  # noqa: E402

from lambdas.adapters.dynamodb_policy_entries import device_item  # noqa: E402
from lambdas.composition import Adapters  # noqa: E402
from lambdas.domain.policy_bootstrap import first_watermark  # noqa: E402
from lambdas.domain.policy_log import (  # noqa: E402
    ABANDON_GRACE,
    Change,
    ChangeKind,
    LogRecord,
    LogState,
    Watermark,
    walk,
)
from lambdas.ports import ClusterStore, PolicyEntryStore, PolicyLog  # noqa: E402
from lambdas.settings import parse_settings  # noqa: E402
from lambdas.usecases.policy_versions import VersionStores, advance, write_version  # noqa: E402
from seg_contract import PolicySnapshot  # noqa: E402
from seg_contract.digest import policy_digest  # noqa: E402
from tests.support.aws import create_all, environment  # noqa: E402
from tests.support.fakes import (  # noqa: E402
    MemoryClusters,
    MemoryConnections,
    MemoryEntries,
    MemoryPolicyLog,
    MemoryPolicyState,
    MemoryPoster,
    local_signing,
)
from tests.support.policy import propose_entry  # noqa: E402

CLUSTER = "bench"


def wall_ms(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def walk_us(versions: int) -> float:
    """CPU µs per committed version (one changed key each) walked by ``advance``."""
    records = [
        LogRecord(
            v,
            LogState.COMMITTED,
            (Change(ChangeKind.DEVICE, f"user{v}\x1fdevice", v * 7919, v * 104729),),
        )
        for v in range(1, versions + 1)
    ]
    now = datetime.now(UTC)
    start = Watermark(0, 12345, ((0, 12345),))
    return cpu_ms(lambda: walk(start, versions, records, now)) / versions * 1000


def pure_figures(snap: PolicySnapshot) -> None:
    devices = snap.devices
    scratch = cpu_ms(lambda: policy_digest(devices, (), snap.settings, 0), repeat=3)
    first = cpu_ms(
        lambda: first_watermark(
            snap.version,
            devices=devices,
            credentials=(),
            settings=snap.settings,
            settings_version=0,
            records=(),
        ),
        repeat=3,
    )
    print(f"  policy_digest from scratch:           {scratch:9.1f} ms CPU")
    print(f"  bootstrap's first watermark:          {first:9.1f} ms CPU")
    print(f"  walk, per committed version:          {walk_us(2_000):9.1f} µs CPU")


class CallTimer:
    """AWS calls by operation, with their wall times (botocore's before/after-call
    events on one client)."""

    def __init__(self, client: object) -> None:
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self._started: dict[str, float] = {}
        events = client.meta.events  # type: ignore[attr-defined]
        events.register("before-call.dynamodb.*", self._before)
        events.register("after-call.dynamodb.*", self._after)

    def _before(self, event_name: str, **_: object) -> None:
        self._started[event_name] = time.perf_counter()

    def _after(self, event_name: str, **_: object) -> None:
        started = self._started.pop(event_name.replace("after-call", "before-call"), None)
        if started is not None:
            self.times[event_name.rsplit(".", 1)[-1]].append(time.perf_counter() - started)

    def reset(self) -> None:
        self.times.clear()


def commit_figures(
    label: str,
    clusters: ClusterStore,
    entries: PolicyEntryStore,
    log: PolicyLog,
    snap: PolicySnapshot,
    commits: int,
    calls: CallTimer | None = None,
) -> None:
    """The cluster exists in the old shape with the snapshot's entries: bootstrap it,
    then commit and advance."""
    now = datetime.now(UTC)
    advance(CLUSTER, clusters=clusters, log=log, now=now, entries=entries)  # the mark
    later = now + ABANDON_GRACE
    started = time.perf_counter()
    cluster = advance(CLUSTER, clusters=clusters, log=log, now=later, entries=entries)
    bootstrap_s = time.perf_counter() - started
    assert not cluster.legacy and cluster.committed_version == snap.version
    assert cluster.watermark.digest == policy_digest(snap.devices, (), snap.settings, 0)
    signing, _ = local_signing()  # the push is signed once per version (local key)
    stores = VersionStores(clusters, entries, log, MemoryConnections(), MemoryPoster(), signing)
    users: Iterator[int] = iter(range(10**9))

    def commit() -> None:
        write_version(CLUSTER, propose_entry(f"user{next(users)}"), stores=stores, now=later)

    if calls is not None:
        calls.reset()
    per_commit = wall_ms(commit, commits)
    per_call = {op: list(t) for op, t in calls.times.items()} if calls is not None else {}
    idle = wall_ms(lambda: advance(CLUSTER, clusters=clusters, log=log, now=later), commits)
    final = advance(CLUSTER, clusters=clusters, log=log, now=later)
    devices, credentials = entries.list_all(CLUSTER)
    assert final.watermark.digest == policy_digest(
        devices, credentials, final.settings, final.settings_version
    )
    print(f"{label} ({len(snap.devices):,}-entry cluster):")
    print(f"  bootstrap (read every entry, digest):  {bootstrap_s * 1000:9.1f} ms wall")
    print(f"  per commit (write_version + advance):  {per_commit:9.2f} ms wall")
    print(f"  advance with nothing to do:            {idle:9.2f} ms wall")
    if per_call:
        total = sum(len(t) for t in per_call.values()) / commits
        print(f"  AWS calls per commit: {total:.1f} (what carries over to DynamoDB):")
        for op, times in sorted(per_call.items()):
            print(
                f"    {op:20s} {len(times) / commits:4.1f} per commit, "
                f"median {statistics.median(times) * 1000:8.2f} ms on moto"
            )
        print(
            "  (moto's TransactWriteItems deep-copies every table it touches, so on moto\n"
            "   it grows with the cluster; DynamoDB's costs the items it writes)"
        )


def in_memory(snap: PolicySnapshot, commits: int) -> None:
    state = MemoryPolicyState()
    clusters = MemoryClusters(state)
    clusters.put_legacy(CLUSTER, counter=snap.version, settings=snap.settings)
    for entry in snap.devices:
        state.devices[(CLUSTER, entry.key)] = entry
    commit_figures(
        "in memory", clusters, MemoryEntries(state), MemoryPolicyLog(state), snap, commits
    )


def on_moto(snap: PolicySnapshot, commits: int) -> None:
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        tables, queues, _ = create_all(dynamodb, sqs)
        settings = parse_settings(environment(tables, queues))
        dynamodb.put_item(  # a cluster item in the old shape: no committed version
            TableName=settings.table("clusters"),
            Item={
                "cluster_id": {"S": CLUSTER},
                "kind": {"S": "cluster"},
                "name": {"S": CLUSTER},
                "created_at": {"S": "2026-01-01T00:00:00.000Z"},
                "policy_version": {"N": str(snap.version)},
                "settings": {"S": snap.settings.model_dump_json()},
                "settings_version": {"N": "0"},
            },
        )
        started = time.perf_counter()
        items = [{"PutRequest": {"Item": device_item(CLUSTER, e)}} for e in snap.devices]
        for first in range(0, len(items), 25):
            dynamodb.batch_write_item(
                RequestItems={settings.table("policy_entries"): items[first : first + 25]}
            )
        print(f"(moto: {len(items):,} entries loaded in {time.perf_counter() - started:.1f} s)")
        adapters = Adapters(settings, dynamodb=dynamodb)
        commit_figures(
            "on moto (in-process)",
            adapters.clusters,
            adapters.policy_entries,
            adapters.policy_log,
            snap,
            commits,
            CallTimer(dynamodb),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=200, help="in memory")
    parser.add_argument(
        "--moto-commits", type=int, default=10, help="on moto (each copies the tables)"
    )
    parser.add_argument("--skip-moto", action="store_true", help="pure and in-memory only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the bootstrap's warnings, once per run
    snap = build_snapshot(args.devices)
    print(f"python {sys.version.split()[0]}, {args.devices:,} devices")
    print("pure (lambdas.domain):")
    pure_figures(snap)
    in_memory(snap, args.commits)
    if not args.skip_moto:
        on_moto(snap, args.moto_commits)
    _, full = full_digest_ms(snap)
    unknown, known = push_costs_us(snap, 2_000)
    print("the node (bench/policy_digest.py), same policy:")
    print(f"  full digest of the index:              {full:9.1f} ms CPU")
    print(f"  push apply with the digest kept:       {known:9.1f} µs CPU (+{known - unknown:.1f})")


if __name__ == "__main__":
    main()
