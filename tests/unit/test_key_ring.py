"""The keys a gateway trusts (``seg_contract.key_ring``): pins, learned keys, rotation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from seg_contract.key_ring import AnnouncedKey, AnnouncedState, KeyRing, SigningKeySet
from seg_contract.signing import (
    Applied,
    Kind,
    LocalSigner,
    RejectReason,
    SignatureRejected,
    SignedPayload,
    issue,
)

OLD, NEW, ROGUE = LocalSigner.generate(), LocalSigner.generate(), LocalSigner.generate()
CLUSTER = "c-0123456789"
NOW_MS = 1_764_244_800_000


def announced(signer: LocalSigner, state: AnnouncedState) -> AnnouncedKey:
    return AnnouncedKey(kid=signer.kid, public_key=signer.public.spki_b64, state=state)


def key_set(
    version: int,
    keys: list[tuple[LocalSigner, AnnouncedState]],
    *,
    signer: LocalSigner,
    cluster_id: str = CLUSTER,
    issued_at_ms: int = NOW_MS,
) -> SignedPayload:
    body = SigningKeySet(
        cluster_id=cluster_id, version=version, keys=tuple(announced(s, st) for s, st in keys)
    )
    return issue(
        signer,
        cluster_id=cluster_id,
        kind=Kind.KEYS,
        version=version,
        payload=body.model_dump_json().encode(),
        issued_at_ms=issued_at_ms,
    )


A, N, P = AnnouncedState.ACTIVE, AnnouncedState.NEXT, AnnouncedState.PREVIOUS


def test_a_rotation_is_learned_step_by_step_from_the_pinned_key() -> None:
    ring = KeyRing(pinned=(OLD.public,))
    announce = key_set(1, [(OLD, A), (NEW, N)], signer=OLD)
    ring, _ = ring.learn(announce, cluster_id=CLUSTER, now_ms=NOW_MS)
    assert {k.kid for k in ring.trusted()} == {OLD.kid, NEW.kid}

    activate = key_set(2, [(NEW, A), (OLD, P)], signer=NEW)
    ring, _ = ring.learn(activate, cluster_id=CLUSTER, now_ms=NOW_MS)
    assert ring.keys_version == 2

    retire = key_set(3, [(NEW, A)], signer=NEW)
    ring, _ = ring.learn(retire, cluster_id=CLUSTER, now_ms=NOW_MS)
    # The pin stays (the operator's decision); the learned keys follow the newest set.
    assert [k.kid for k in ring.learned] == [NEW.kid]
    assert {k.kid for k in ring.trusted()} == {OLD.kid, NEW.kid}

    # At start: the stored chain replays from the pins, whatever its age.
    later = NOW_MS + 90 * 86_400_000
    again = KeyRing(pinned=(OLD.public,))
    for stored in (announce, activate, retire):
        again, _ = again.learn(stored, cluster_id=CLUSTER, now_ms=later, live=False)
    assert again == ring


def test_a_key_set_signed_by_an_untrusted_key_is_refused() -> None:
    ring = KeyRing(pinned=(OLD.public,))
    forged = key_set(1, [(ROGUE, A)], signer=ROGUE)
    with pytest.raises(SignatureRejected) as caught:
        ring.learn(forged, cluster_id=CLUSTER, now_ms=NOW_MS)
    assert caught.value.reason is RejectReason.UNKNOWN_KEY


def test_an_older_key_set_is_a_replay_and_the_same_one_changes_nothing() -> None:
    ring = KeyRing(pinned=(OLD.public,))
    ring, _ = ring.learn(key_set(3, [(NEW, A)], signer=OLD), cluster_id=CLUSTER, now_ms=NOW_MS)
    with pytest.raises(SignatureRejected) as caught:
        ring.learn(
            key_set(2, [(NEW, A), (ROGUE, N)], signer=OLD), cluster_id=CLUSTER, now_ms=NOW_MS
        )
    assert caught.value.reason is RejectReason.REPLAYED
    same, verified = ring.learn(
        key_set(3, [(NEW, A)], signer=NEW), cluster_id=CLUSTER, now_ms=NOW_MS
    )
    assert same is ring and not verified.apply


def test_a_key_set_for_another_cluster_is_refused() -> None:
    ring = KeyRing(pinned=(OLD.public,))
    other = key_set(1, [(OLD, A)], signer=OLD, cluster_id="c-9999999999")
    with pytest.raises(SignatureRejected) as caught:
        ring.learn(other, cluster_id=CLUSTER, now_ms=NOW_MS)
    assert caught.value.reason is RejectReason.WRONG_CLUSTER


def test_a_signed_payload_that_is_not_a_key_set_is_malformed() -> None:
    ring = KeyRing(pinned=(OLD.public,))
    junk = issue(
        OLD, cluster_id=CLUSTER, kind=Kind.KEYS, version=1, payload=b"{}", issued_at_ms=NOW_MS
    )
    with pytest.raises(SignatureRejected) as caught:
        ring.learn(junk, cluster_id=CLUSTER, now_ms=NOW_MS)
    assert caught.value.reason is RejectReason.MALFORMED


def test_a_statement_version_that_differs_from_the_set_is_refused() -> None:
    ring = KeyRing(pinned=(OLD.public,))
    body = SigningKeySet(cluster_id=CLUSTER, version=5, keys=(announced(OLD, A),))
    lying = issue(
        OLD,
        cluster_id=CLUSTER,
        kind=Kind.KEYS,
        version=6,
        payload=body.model_dump_json().encode(),
        issued_at_ms=NOW_MS,
    )
    with pytest.raises(SignatureRejected) as caught:
        ring.learn(lying, cluster_id=CLUSTER, now_ms=NOW_MS)
    assert caught.value.reason is RejectReason.PAYLOAD_MISMATCH


@pytest.mark.parametrize(
    "keys",
    [
        [(OLD, N)],  # no active key
        [(OLD, A), (NEW, A)],  # two active keys
        [(OLD, A), (OLD, P)],  # one kid twice
    ],
)
def test_key_sets_have_exactly_one_active_key_and_no_duplicates(
    keys: list[tuple[LocalSigner, AnnouncedState]],
) -> None:
    with pytest.raises(ValidationError):
        SigningKeySet(cluster_id=CLUSTER, version=1, keys=tuple(announced(s, st) for s, st in keys))


def test_an_announced_kid_must_be_its_keys_fingerprint() -> None:
    with pytest.raises(ValidationError, match="fingerprint"):
        SigningKeySet(
            cluster_id=CLUSTER,
            version=1,
            keys=(AnnouncedKey(kid=NEW.kid, public_key=OLD.public.spki_b64, state=A),),
        )


def test_the_ring_verifies_policy_with_every_trusted_key() -> None:
    ring = KeyRing(pinned=(OLD.public,), learned=(NEW.public,))
    for signer in (OLD, NEW):
        item = issue(
            signer,
            cluster_id=CLUSTER,
            kind=Kind.CHANGE,
            version=2,
            payload=b"{}",
            issued_at_ms=NOW_MS,
        )
        verified = ring.verifier().verify(
            item, cluster_id=CLUSTER, kinds=Kind.CHANGE, applied=Applied(version=1), now_ms=NOW_MS
        )
        assert verified.apply
