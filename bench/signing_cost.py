"""What verifying signed policy costs a gateway, next to the unsigned baseline.

Run:  .venv/bin/python bench/signing_cost.py  [--devices N] [--rounds N]

For a 100,000-device snapshot (goal: at most 50 ms more than the unsigned baseline) and
for one push (goal: at most 1 ms more), it prints the CPU time of what a node does on
arrival: unsigned = parse the payload; signed = the node's own path
(``onprem_gateway.agent.policy_trust``): read the statement and signature (headers, or
the WebSocket envelope), verify them (SHA-256 of the payload, ECDSA P-256, the version
and time rules), parse the same payload and check it says what the statement says.
Also: the start of a node from its journal (``policy_journal.replay``: decode, verify,
build the index) next to building the index from unsigned JSON, and signing with a
local key (KMS signs in the control plane; its latency is a network round trip, not
CPU here). Figures are process CPU time, median of 5 repeats; run it on an idle machine
for stable numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decision_cost import build_snapshot

from onprem_gateway.agent.persist import decode_records
from onprem_gateway.agent.policy_journal import replay
from onprem_gateway.agent.policy_trust import PolicyTrust
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, DeviceEntry, EntrySource, PolicySnapshot, PushChange
from seg_contract.models import PUSH_MESSAGE
from seg_contract.signing import (
    Applied,
    Kind,
    LocalSigner,
    SignedPayload,
    Verifier,
    encode_record,
    issue,
)

CLUSTER = "bench"


def cpu_ms(fn: Callable[[], object], rounds: int) -> float:
    """Median of 5 repeats, process CPU milliseconds per call."""
    runs = timeit.repeat(fn, number=rounds, repeat=5, timer=time.process_time)
    return statistics.median(runs) / rounds * 1e3


def row(what: str, unsigned: float, signed: float, goal: float, unit: str = "ms") -> None:
    scale = 1000.0 if unit == "µs" else 1.0
    extra = signed - unsigned
    verdict = "ok" if extra <= goal else "OVER GOAL"
    print(
        f"{what:<34} unsigned {unsigned * scale:10.1f} {unit}   signed {signed * scale:10.1f} "
        f"{unit}   extra {extra * scale:8.2f} {unit} (goal <= {goal * scale:g} {unit}: {verdict})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="snapshot parses per repeat")
    parser.add_argument("--push-rounds", type=int, default=2000)
    args = parser.parse_args()

    signer = LocalSigner.generate()
    verifier = Verifier([signer.public])
    now_ms = int(time.time() * 1000)

    def node_trust() -> PolicyTrust:
        """A connected node's trust (no stored key sets), as at its start."""
        return PolicyTrust((signer.public,), cluster_id=CLUSTER, max_skew_s=300)

    # --- a snapshot over HTTP (body + two headers) -------------------------------------
    snapshot = build_snapshot(args.devices)
    body = snapshot.model_dump_json().encode()
    signed = issue(
        signer,
        cluster_id=CLUSTER,
        kind=Kind.SNAPSHOT,
        version=snapshot.version,
        payload=body,
        issued_at_ms=now_ms,
    )
    headers = signed.headers()

    def unsigned_snapshot() -> object:
        return PolicySnapshot.model_validate_json(body)

    def verify_snapshot() -> object:
        received = SignedPayload.from_headers(headers, body)
        verified = verifier.verify(
            received, cluster_id=CLUSTER, kinds=Kind.SNAPSHOT, applied=Applied(), now_ms=now_ms
        )
        return verified

    def signed_snapshot() -> object:
        return node_trust().snapshot(SignedPayload.from_headers(headers, body))

    print(
        f"snapshot: {args.devices:,} devices, {len(body) / 1e6:.1f} MB of JSON; "
        f"statement {len(signed.statement_token)} chars, signature "
        f"{len(signed.signature_token)} chars"
    )
    base = cpu_ms(unsigned_snapshot, args.rounds)
    full = cpu_ms(signed_snapshot, args.rounds)
    row("snapshot (verify + parse)", base, full, 50.0)
    print(f"{'  of which verification alone':<34} {cpu_ms(verify_snapshot, args.rounds):10.2f} ms")

    journal = encode_record(signed)

    def unsigned_start() -> object:
        return PolicyIndex.from_snapshot(PolicySnapshot.model_validate_json(body), 0.0)

    def restart() -> object:
        return replay(decode_records(journal, allow_torn=True).records, node_trust())

    row(
        "start from the journal",
        cpu_ms(unsigned_start, args.rounds),
        cpu_ms(restart, args.rounds),
        50.0,
    )

    # --- a push over the WebSocket (the envelope) --------------------------------------
    entry = DeviceEntry(
        user="alice",
        device_id="appl123456789",
        access=Access.BLOCK,
        reason="compromised",
        source=EntrySource.COMPLIANCE,
        version=snapshot.version + 1,
        updated_at=datetime.now(UTC),
        device_type="iPhone",
        model="iPhone 15",
        os="iOS 18.1",
    )
    push = PushChange(cluster_id=CLUSTER, version=snapshot.version + 1, devices=(entry,))
    raw_push = push.model_dump_json()

    def sign_push() -> SignedPayload:
        return issue(
            signer,
            cluster_id=CLUSTER,
            kind=Kind.CHANGE,
            version=push.version,
            payload=raw_push.encode(),
            issued_at_ms=now_ms,
        )

    signed_push = sign_push()
    frame = signed_push.envelope().model_dump_json()
    trust = node_trust()
    held = PolicySnapshot(
        cluster_id=CLUSTER,
        version=snapshot.version,
        generated_at=snapshot.generated_at,
        settings=snapshot.settings,
    )
    index = PolicyIndex.from_snapshot(held, 0.0)

    def unsigned_push() -> object:
        return PUSH_MESSAGE.validate_json(raw_push)

    def signed_push_arrives() -> object:
        return trust.push(frame, index)

    print(f"\npush: one device entry, {len(raw_push)} bytes; envelope {len(frame)} bytes")
    row(
        "push (envelope + verify + parse)",
        cpu_ms(unsigned_push, args.push_rounds),
        cpu_ms(signed_push_arrives, args.push_rounds),
        1.0,
        unit="µs",
    )

    print(
        f"{'signing one push (local key)':<34} {cpu_ms(sign_push, args.push_rounds) * 1000:10.1f} "
        "µs (KMS Sign in the control plane: one request, ~10 ms round trip)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
