"""The node's trust in policy signing keys, on disk: the chain of key sets it accepted
(``<state_dir>/signing-keys.chain``), each stored exactly as received and replayed at
start from the configured pins (``seg_contract.key_ring``).

A key set is written only after it verified under a key the node already trusted, so a
file someone edited, truncated or filled with sets signed by their own key does not
verify at start: it is moved aside (``signing-keys.chain.corrupt-<time>``, for the
operator), reported, and the node trusts its pins alone. It never trusts more because of
a local file than the chain of signatures from its pins vouches for.

The chain is kept short: after each accepted set only the sets that link the pins to the
newest one are kept (the newest alone while a pinned key signs; after rotations, one set
per key handover).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from onprem_gateway.agent.persist import atomic_write
from seg_contract.key_ring import KeyRing, SigningKeySet
from seg_contract.signing import (
    RejectReason,
    SignatureRejected,
    SignedPayload,
    TrustedKey,
    decode_record,
    encode_record,
)

log = logging.getLogger(__name__)

FILE_NAME = "signing-keys.chain"
MAX_CHAIN = 32  # a rotation adds at most three sets; far more means something is wrong


@dataclass(frozen=True)
class Loaded:
    ring: KeyRing
    problem: str = ""  # why a stored chain was refused ("" when none was)


def _replay(
    pins: tuple[TrustedKey, ...],
    chain: list[SignedPayload],
    cluster_id: str,
    now_ms: int,
    max_skew_ms: int,
) -> KeyRing:
    ring = KeyRing(pinned=pins)
    for signed in chain:
        ring, _ = ring.learn(
            signed, cluster_id=cluster_id, now_ms=now_ms, live=False, max_skew_ms=max_skew_ms
        )
    return ring


def _shortest(
    chain: list[SignedPayload], learned: KeyRing, *, cluster_id: str, now_ms: int, max_skew_ms: int
) -> list[SignedPayload]:
    """The fewest sets (in order) whose signatures link the pins to the newest set: walk
    back from the newest, each time keeping the earliest set that announced the key
    which signed the set kept after it. Kept only if it replays to the same ring."""
    pins = learned.pinned
    pinned = {k.kid for k in pins}
    kept = [chain[-1]]
    need = chain[-1].statement().kid
    candidates = chain[:-1]
    while need not in pinned:
        found = next((i for i, s in enumerate(candidates) if need in _announced(s)), None)
        if found is None:
            return chain
        kept.insert(0, candidates[found])
        need = candidates[found].statement().kid
        candidates = candidates[:found]
    try:
        if _replay(pins, kept, cluster_id, now_ms, max_skew_ms) == learned:
            return kept
    except SignatureRejected:
        pass
    return chain


def _announced(signed: SignedPayload) -> set[str]:
    try:
        return {k.kid for k in SigningKeySet.model_validate_json(signed.payload).keys}
    except ValueError:
        return set()


class SigningKeysFile:
    """The accepted key sets of one node."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._chain: list[SignedPayload] = []

    @property
    def newest(self) -> SignedPayload | None:
        """The newest key set accepted (None before the first)."""
        return self._chain[-1] if self._chain else None

    def load(
        self, pins: tuple[TrustedKey, ...], cluster_id: str, now_ms: int, max_skew_ms: int
    ) -> Loaded:
        """The ring of the stored chain replayed from ``pins`` (pins alone when there is
        none, or when it does not verify: then it is moved aside and ``problem`` says
        why)."""
        self._chain = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded(KeyRing(pinned=pins))
        try:
            chain: list[SignedPayload] = []
            offset = 0
            while offset < len(data):
                signed, used = decode_record(data, offset)
                chain.append(signed)
                offset += used
                if len(chain) > MAX_CHAIN:
                    raise SignatureRejected(
                        RejectReason.MALFORMED, f"more than {MAX_CHAIN} key sets"
                    )
            ring = _replay(pins, chain, cluster_id, now_ms, max_skew_ms)
        except SignatureRejected as exc:
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            problem = f"{self.path.name} refused ({exc}); moved aside to {aside.name}"
            log.error("%s: trusting the configured policy signing keys only", problem)
            return Loaded(KeyRing(pinned=pins), problem)
        self._chain = chain
        return Loaded(ring)

    def accept(
        self,
        ring: KeyRing,
        signed: SignedPayload,
        *,
        cluster_id: str,
        now_ms: int,
        max_skew_ms: int,
    ) -> KeyRing:
        """Learn a key set that just arrived (``SignatureRejected`` when it must not be)
        and store it when it changed the ring."""
        learned, verified = ring.learn(
            signed, cluster_id=cluster_id, now_ms=now_ms, max_skew_ms=max_skew_ms
        )
        if not verified.apply:
            return ring
        chain = _shortest(
            [*self._chain, signed],
            learned,
            cluster_id=cluster_id,
            now_ms=now_ms,
            max_skew_ms=max_skew_ms,
        )
        atomic_write(self.path, b"".join(encode_record(s) for s in chain))
        self._chain = chain
        return learned
