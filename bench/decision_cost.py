"""The cost of one access decision: parse + decide on a 100,000-device policy.

Run:  .venv/bin/python bench/decision_cost.py  [--devices N] [--rounds N]

Prints µs per call for: parse (plain query), parse (base64 query), decide, the two
together, and ``admit`` (parse + who is asking from the Authorization header + decide:
what the data path runs per request), plus the time to build the index from a snapshot
and to apply one push. The figures are per core and single-threaded; run it on an idle
machine for stable numbers.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import struct
import sys
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _summary import record

from onprem_gateway.core.admission import Admitted, Blocked, admit
from onprem_gateway.core.block_responses import blocked_response
from onprem_gateway.core.decision import decide
from onprem_gateway.core.eas_request import parse
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import (
    Access,
    ClusterSettings,
    DeviceEntry,
    DeviceRule,
    EntrySource,
    PolicySnapshot,
    PushChange,
    RuleField,
)

PATH = "/Microsoft-Server-ActiveSync"


def build_snapshot(devices: int) -> PolicySnapshot:
    now = datetime.now(UTC)
    entries = tuple(
        DeviceEntry.model_construct(
            user=f"user{i}",
            device_id=f"device{i:08d}",
            access=Access.ALLOW if i % 10 else Access.BLOCK,
            reason="compliant" if i % 10 else "compromised",
            source=EntrySource.COMPLIANCE,
            version=i + 1,
            updated_at=now,
            mdm_device_id="",
            device_type="iPhone",
            model="iPhone 15",
            os="iOS 18.1",
        )
        for i in range(devices)
    )
    rules = [
        DeviceRule(
            id=f"r{n}", field=RuleField.USER_AGENT, pattern=f"BadClient{n}/*", action="block"
        )
        for n in range(20)
    ]
    rules.append(DeviceRule(id="os", field=RuleField.OS, pattern="Android 8*", action="block"))
    return PolicySnapshot(
        cluster_id="bench",
        version=devices,
        generated_at=now,
        settings=ClusterSettings(rules=tuple(rules)),
        devices=entries,
    )


def per_call_us(fn, rounds: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median and best of 5 repeats, CPU µs per call (process CPU time, so that other
    load on a shared machine inflates the figures less than wall-clock time would)."""
    runs = timeit.repeat(fn, number=rounds, repeat=5, timer=time.process_time)
    return statistics.median(runs) / rounds * 1e6, min(runs) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=50_000)
    args = parser.parse_args()

    snap = build_snapshot(args.devices)
    started = time.perf_counter()
    index = PolicyIndex.from_snapshot(snap, confirmed_at=time.time())
    build_s = time.perf_counter() - started

    target = args.devices // 2 + 1  # an allowed device (i % 10 != 0)
    plain = (
        f"{PATH}?Cmd=Sync&User=CORP%5Cuser{target}&DeviceId=device{target:08d}&DeviceType=iPhone"
    )
    headers = {
        "ms-asprotocolversion": "16.1",
        "x-ms-policykey": "3212836741",
        "user-agent": "Apple-iPhone15C2/2201.100",
        "authorization": "Basic " + base64.b64encode(f"user{target}:pw".encode()).decode(),
    }
    device = f"device{target:08d}".encode()
    raw = bytes([161, 0]) + struct.pack("<H", 0x0409) + bytes([len(device)]) + device
    raw += b"\x04" + struct.pack("<I", 3212836741) + b"\x06iPhone"
    b64 = f"{PATH}?{base64.b64encode(raw).decode()}"
    b64_headers = {k: v for k, v in headers.items() if k in ("user-agent", "authorization")}

    now = time.time()

    def admitted(target: str, hdrs: dict[str, str]) -> Admitted | Blocked:
        out = admit(
            "POST",
            target,
            hdrs,
            autodiscover=False,
            bound=None,
            policy=index,
            now=now,
            verify_bearer=lambda token: "",
        )
        assert isinstance(out, Admitted | Blocked), out
        return out

    # What is decided is the authenticated user's request (core.admission).
    facts = admitted(plain, headers).facts
    decision = decide(facts, index, now)
    assert decision.access is Access.ALLOW, decision
    blocked_out = admitted(
        f"{PATH}?Cmd=Ping&DeviceId=device00000010&DeviceType=iPhone",
        {**headers, "authorization": "Basic " + base64.b64encode(b"user10:pw").decode()},
    )
    blocked_facts, blocked = blocked_out.facts, blocked_out.decision
    assert blocked.access is Access.BLOCK, blocked

    rows = [
        ("parse, plain query + 4 headers", lambda: parse("POST", plain, headers)),
        ("parse, base64 query", lambda: parse("POST", b64, b64_headers)),
        ("decide (entry hit, 21 rules)", lambda: decide(facts, index, now)),
        ("decide (blocked entry)", lambda: decide(blocked_facts, index, now)),
        (
            "parse + decide, plain",
            lambda: decide(parse("POST", plain, headers), index, now),
        ),
        (
            "parse + decide, base64",
            lambda: decide(parse("POST", b64, b64_headers), index, now),
        ),
        ("admit (parse + Basic identity + decide)", lambda: admitted(plain, headers)),
        ("admit, base64 query", lambda: admitted(b64, b64_headers)),
        ("blocked_response (200 + WBXML)", lambda: blocked_response(blocked_facts, blocked)),
    ]
    print(f"python {sys.version.split()[0]}, {args.devices:,} devices in the index")
    print(f"index build from snapshot: {build_s * 1000:.0f} ms (wall, first build)")
    started = time.process_time()
    PolicyIndex.from_snapshot(snap, confirmed_at=time.time())
    print(f"index build again: {(time.process_time() - started) * 1000:.0f} ms CPU")
    started = time.process_time()
    persisted = index.to_snapshot().model_dump_json()
    print(
        f"to_snapshot + JSON dump (last-known-good file): "
        f"{(time.process_time() - started) * 1000:.0f} ms CPU, {len(persisted) / 2**20:.1f} MiB"
    )
    started = time.process_time()
    PolicySnapshot.model_validate_json(persisted)
    print(
        f"snapshot JSON validation (pydantic, agent side): "
        f"{(time.process_time() - started) * 1000:.0f} ms CPU"
    )
    push = PushChange(
        cluster_id="bench",
        version=args.devices + 1,
        devices=(snap.devices[5].model_copy(update={"version": args.devices + 1}),),
    )
    push_us, _ = per_call_us(lambda: index.apply_push(push), 2000)
    print(f"apply one push: {push_us:.1f} µs")
    print(f"{'operation':40s} {'median CPU µs':>14s} {'best CPU µs':>12s}")
    command = (
        f".venv/bin/python bench/decision_cost.py --devices {args.devices} --rounds {args.rounds}"
    )
    for name, fn in rows:
        median, best = per_call_us(fn, args.rounds)
        print(f"{name:40s} {median:14.2f} {best:12.2f}")
        if name == "parse + decide, plain":
            record("decision_cost", f"{name} (CPU µs)", f"{median:.1f}", command=command)
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
