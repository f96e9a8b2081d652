"""The node's accepted key sets on disk (``agent/signing_keys_file.py``): stored as
received, replayed from the pins at start, never trusted beyond what signatures vouch."""

from __future__ import annotations

from pathlib import Path

import pytest

from onprem_gateway.agent.signing_keys_file import FILE_NAME, SigningKeysFile
from seg_contract.key_ring import AnnouncedKey, AnnouncedState, KeyRing, SigningKeySet
from seg_contract.signing import Kind as K
from seg_contract.signing import (
    LocalSigner,
    RejectReason,
    SignatureRejected,
    SignedPayload,
    encode_record,
    issue,
)

OLD, NEW, NEWER, ROGUE = (LocalSigner.generate() for _ in range(4))
CLUSTER = "c-0123456789"
NOW_MS = 1_764_244_800_000
SKEW = 300_000
A, N, P = AnnouncedState.ACTIVE, AnnouncedState.NEXT, AnnouncedState.PREVIOUS


def key_set(version: int, keys: list[tuple[LocalSigner, AnnouncedState]], signer: LocalSigner):
    body = SigningKeySet(
        cluster_id=CLUSTER,
        version=version,
        keys=tuple(
            AnnouncedKey(kid=s.kid, public_key=s.public.spki_b64, state=st) for s, st in keys
        ),
    )
    return issue(
        signer,
        cluster_id=CLUSTER,
        kind=K.KEYS,
        version=version,
        payload=body.model_dump_json().encode(),
        issued_at_ms=NOW_MS,
    )


def accept(store: SigningKeysFile, ring: KeyRing, signed: SignedPayload) -> KeyRing:
    return store.accept(ring, signed, cluster_id=CLUSTER, now_ms=NOW_MS, max_skew_ms=SKEW)


def load(tmp_path: Path):  # type: ignore[no-untyped-def]
    return SigningKeysFile(tmp_path).load((OLD.public,), CLUSTER, NOW_MS + 86_400_000, SKEW)


def test_two_rotations_survive_a_restart_and_the_chain_stays_short(tmp_path: Path) -> None:
    store = SigningKeysFile(tmp_path)
    ring = store.load((OLD.public,), CLUSTER, NOW_MS, SKEW).ring
    for signed in (
        key_set(2, [(OLD, A), (NEW, N)], OLD),
        key_set(3, [(NEW, A), (OLD, P)], NEW),
        key_set(4, [(NEW, A)], NEW),
        key_set(5, [(NEW, A), (NEWER, N)], NEW),
        key_set(6, [(NEWER, A), (NEW, P)], NEWER),
    ):
        ring = accept(store, ring, signed)
    assert {k.kid for k in ring.learned} == {NEWER.kid, NEW.kid}

    restarted = load(tmp_path)
    assert restarted.problem == "" and restarted.ring == ring
    # Not every set is kept: only what links the pin to the newest set.
    stored = (tmp_path / FILE_NAME).read_bytes()
    assert stored.count(b'"format":"seg-signed"') < 5


def test_an_unchanged_key_set_writes_nothing(tmp_path: Path) -> None:
    store = SigningKeysFile(tmp_path)
    ring = KeyRing(pinned=(OLD.public,))
    ring = accept(store, ring, key_set(2, [(OLD, A)], OLD))
    (tmp_path / FILE_NAME).unlink()
    assert accept(store, ring, key_set(2, [(OLD, A)], OLD)) is ring
    assert not (tmp_path / FILE_NAME).exists()


def test_a_key_set_from_an_untrusted_key_is_refused_and_not_stored(tmp_path: Path) -> None:
    store = SigningKeysFile(tmp_path)
    with pytest.raises(SignatureRejected) as caught:
        accept(store, KeyRing(pinned=(OLD.public,)), key_set(2, [(ROGUE, A)], ROGUE))
    assert caught.value.reason is RejectReason.UNKNOWN_KEY
    assert not (tmp_path / FILE_NAME).exists()


@pytest.mark.parametrize(
    "content",
    [
        encode_record(key_set(2, [(ROGUE, A)], ROGUE)),  # someone's own key set
        encode_record(key_set(2, [(OLD, A), (NEW, N)], OLD))[:-3],  # truncated
        b"garbage\n",
    ],
)
def test_a_stored_chain_that_does_not_verify_is_moved_aside_and_the_pins_stay(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    loaded = load(tmp_path)
    assert loaded.ring == KeyRing(pinned=(OLD.public,))
    assert "refused" in loaded.problem and "moved aside" in loaded.problem
    assert not (tmp_path / FILE_NAME).exists()
    assert list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))


def test_no_file_means_the_pins_alone(tmp_path: Path) -> None:
    assert load(tmp_path).ring == KeyRing(pinned=(OLD.public,))
