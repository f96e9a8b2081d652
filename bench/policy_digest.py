"""The policy digest on the node: its cost on a 100,000-device policy, in full and kept
incrementally by pushes, and what it adds to a push and to a snapshot apply.

Run:  .venv/bin/python bench/policy_digest.py  [--devices N] [--pushes N]

The control plane's side of the same digest: ``bench/policy_digest_control_plane.py``.

Prints (CPU time, median of 5 repeats; run on an idle machine for stable figures):
- the full digest of the index (``PolicyIndex.digest()`` on a fresh index: what the
  first keepalive after a snapshot pays, in a thread);
- one push applied while the digest is unknown (a worker process, or before the first
  keepalive) and while it is known (the agent: the digest follows incrementally);
- a 100,000-device snapshot applied onto a loaded index (the merge a refresh does) and
  as a replacement, plus building the index from the snapshot.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decision_cost import build_snapshot  # the same 100,000-device policy

from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, DeviceEntry, EntrySource, PolicySnapshot, PushChange
from seg_contract.digest import policy_digest


def cpu_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        runs.append(time.process_time() - started)
    return statistics.median(runs) * 1000


def pushes(start: int, count: int) -> list[PushChange]:
    now = datetime.now(UTC)
    return [
        PushChange(
            cluster_id="bench",
            version=start + n + 1,
            devices=(
                DeviceEntry(
                    user=f"user{n * 7}",
                    device_id=f"device{n * 7:08d}",
                    access=Access.BLOCK,
                    reason="compromised",
                    source=EntrySource.COMPLIANCE,
                    version=start + n + 1,
                    updated_at=now,
                ),
            ),
        )
        for n in range(count)
    ]


def per_push_us(index: PolicyIndex, messages: list[PushChange], known: bool) -> float:
    """CPU µs per push over ``messages`` applied in sequence (median of 5 runs)."""
    runs = []
    for _ in range(5):
        current = index
        if known:
            current.digest()
        started = time.process_time()
        for message in messages:
            current = current.apply_push(message).index
        runs.append((time.process_time() - started) / len(messages) * 1e6)
        if known:
            assert current.digest_known
    return statistics.median(runs)


def full_digest_ms(snap: PolicySnapshot) -> tuple[float, float]:
    """CPU ms to build the index from ``snap``, and to digest it in full once built."""
    full = cpu_ms(lambda: PolicyIndex.from_snapshot(snap, 0.0).digest())
    build = cpu_ms(lambda: PolicyIndex.from_snapshot(snap, 0.0))
    return build, full - build


def push_costs_us(snap: PolicySnapshot, count: int) -> tuple[float, float]:
    """CPU µs per push with the digest unknown (a worker) and kept (the agent)."""
    messages = pushes(snap.version, count)
    unknown = per_push_us(PolicyIndex.from_snapshot(snap, 0.0), messages, known=False)
    known = per_push_us(PolicyIndex.from_snapshot(snap, 0.0), messages, known=True)
    return unknown, known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--pushes", type=int, default=2_000)
    args = parser.parse_args()
    snap = build_snapshot(args.devices)
    index = PolicyIndex.from_snapshot(snap, time.time())

    print(f"python {sys.version.split()[0]}, {args.devices:,} devices")
    build, full = full_digest_ms(snap)
    print(f"index build from snapshot:           {build:8.1f} ms")
    print(f"full digest (build + digest - build): {full:8.1f} ms")
    reference = policy_digest(snap.devices, (), snap.settings, 0)
    assert index.digest() == reference

    unknown, known = push_costs_us(snap, args.pushes)
    print(f"push apply, digest unknown (worker):  {unknown:8.1f} µs")
    print(f"push apply, digest kept (agent):      {known:8.1f} µs  (+{known - unknown:.1f} µs)")

    loaded = PolicyIndex.from_snapshot(snap, 0.0)
    merge = cpu_ms(lambda: loaded.apply_snapshot(snap, 1.0))
    replace = cpu_ms(lambda: loaded.replace_with_snapshot(snap, 1.0))
    print(f"snapshot apply onto a loaded index:   {merge:8.1f} ms (merge; digest left lazy)")
    print(f"snapshot replace:                     {replace:8.1f} ms")


if __name__ == "__main__":
    main()
