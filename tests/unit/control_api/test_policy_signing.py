"""Signing in the control plane (``lambdas.usecases.policy_signing`` and
``signing_keys``) over in-memory ports: the active key, reuse of answers every node
shares, and the console's rotation steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lambdas.domain.errors import Conflict, InvalidInput, SigningUnavailable
from lambdas.domain.signing_keys import KeyRegistry, KeyState
from lambdas.usecases.policy_signing import PolicySigning, SignatureCache, epoch_ms
from lambdas.usecases.signing_keys import (
    activate_signing_key,
    list_signing_keys,
    register_signing_key,
    retire_signing_key,
)
from seg_contract.key_ring import KeyRing
from seg_contract.signing import Applied, Kind, LocalSigner, Verifier, issue
from tests.support.fakes import ARN_1, FakeSigner, FakeSigners, MemoryKeyStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ARN_2 = "arn:aws:kms:us-east-1:123456789012:key/two"
CLUSTER = "c-0123456789"


@pytest.fixture
def signers() -> FakeSigners:
    return FakeSigners(ARN_1, ARN_2)


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def signing(signers: FakeSigners, store: MemoryKeyStore) -> PolicySigning:
    return PolicySigning(signers, store, (ARN_1, ARN_2))


def verifier(*signers: FakeSigner) -> Verifier:
    return Verifier([s.public for s in signers])


def test_policy_is_signed_with_the_first_key_of_a_stack_that_never_rotated(
    signing: PolicySigning, signers: FakeSigners
) -> None:
    signed = signing.sign(CLUSTER, Kind.SNAPSHOT, 7, b"{}", NOW)
    verified = verifier(signers.by_arn[ARN_1]).verify(
        signed,
        cluster_id=CLUSTER,
        kinds=Kind.SNAPSHOT,
        applied=Applied(),
        now_ms=epoch_ms(NOW),
    )
    assert verified.statement.issued_at_ms == epoch_ms(NOW)
    assert verified.statement.version == 7


def test_a_deployment_without_signing_keys_signs_nothing(store: MemoryKeyStore) -> None:
    signing = PolicySigning(FakeSigners(), store, ())
    with pytest.raises(SigningUnavailable, match="SEG_POLICY_SIGNING_KEY_ARNS"):
        signing.sign(CLUSTER, Kind.SNAPSHOT, 1, b"{}", NOW)


def test_answers_every_node_shares_are_signed_once_per_reuse_window(
    signing: PolicySigning, signers: FakeSigners
) -> None:
    key = signers.by_arn[ARN_1]
    built: list[datetime] = []

    def pong(at: datetime) -> bytes:
        built.append(at)
        return f'{{"server_time":"{at.isoformat()}"}}'.encode()

    def pong_at(verdict: str, at: datetime):  # type: ignore[no-untyped-def]
        return signing.sign_reusable(
            (verdict, 9), cluster_id=CLUSTER, kind=Kind.PONG, version=9, make_payload=pong, now=at
        )

    first = pong_at("in_sync", NOW)
    again = pong_at("in_sync", NOW + timedelta(seconds=59))
    other_verdict = pong_at("diverged", NOW)
    expired = pong_at("in_sync", NOW + timedelta(seconds=60))
    assert again is first
    assert other_verdict is not first and expired is not first
    assert key.signed == 3
    assert built == [NOW, NOW, NOW + timedelta(seconds=60)]


def test_the_304_confirmation_is_reusable_and_has_an_empty_payload(
    signing: PolicySigning, signers: FakeSigners
) -> None:
    a = signing.confirm(CLUSTER, 12, NOW)
    b = signing.confirm(CLUSTER, 12, NOW + timedelta(seconds=10))
    assert a is b and a.payload == b""
    assert signing.confirm(CLUSTER, 13, NOW) is not a
    assert signing.confirm("c-9999999999", 12, NOW) is not a
    assert signers.by_arn[ARN_1].signed == 3


def test_the_signature_cache_is_bounded_and_never_serves_from_the_future() -> None:
    cache = SignatureCache(reuse=timedelta(seconds=60), max_entries=2)
    signer = LocalSigner.generate()
    item = issue(
        signer, cluster_id=CLUSTER, kind=Kind.CONFIRM, version=1, payload=b"", issued_at_ms=0
    )
    for key in ("a", "b", "c"):
        cache.put(key, item, NOW)
    assert cache.get("a", NOW) is None  # evicted: oldest first
    assert cache.get("c", NOW) is item
    assert cache.get("c", NOW - timedelta(seconds=1)) is None  # a clock that went back


def test_a_rotation_end_to_end_as_a_node_sees_it(
    signing: PolicySigning, signers: FakeSigners, store: MemoryKeyStore
) -> None:
    one, two = signers.by_arn[ARN_1], signers.by_arn[ARN_2]
    ring = KeyRing(pinned=(one.public,))

    def node_learns(at: datetime) -> KeyRing:
        learned, _ = ring.learn(
            signing.key_set(CLUSTER, at), cluster_id=CLUSTER, now_ms=epoch_ms(at)
        )
        return learned

    registry, recorded = list_signing_keys(signing=signing, store=store, now=NOW)
    assert (recorded, registry.generation) == (False, 1)

    register_signing_key(ARN_2, signing=signing, store=store, now=NOW)
    assert store.registry.generation == 2
    ring = node_learns(NOW)
    assert {k.kid for k in ring.trusted()} == {one.kid, two.kid}
    # Still signing with key 1 until activation.
    assert signing.sign(CLUSTER, Kind.CHANGE, 3, b"{}", NOW).statement().kid == one.kid

    activate_signing_key(two.kid, signing=signing, store=store, now=NOW)
    pushed = signing.sign(CLUSTER, Kind.CHANGE, 4, b"{}", NOW)
    assert pushed.statement().kid == two.kid
    assert (
        ring.verifier()
        .verify(
            pushed, cluster_id=CLUSTER, kinds=Kind.CHANGE, applied=Applied(3), now_ms=epoch_ms(NOW)
        )
        .apply
    )
    ring = node_learns(NOW)

    retire_signing_key(one.kid, signing=signing, store=store, now=NOW)
    ring = node_learns(NOW)
    assert [k.kid for k in ring.learned] == [two.kid]
    assert store.registry.find(one.kid).state is KeyState.RETIRED  # type: ignore[union-attr]


def test_only_the_stacks_own_keys_can_be_registered(
    signing: PolicySigning, store: MemoryKeyStore
) -> None:
    with pytest.raises(InvalidInput, match="not one of this stack's"):
        register_signing_key(
            "arn:aws:kms:us-east-1:123456789012:key/other", signing=signing, store=store, now=NOW
        )


def test_a_refused_transition_is_a_conflict_and_changes_nothing(
    signing: PolicySigning, signers: FakeSigners, store: MemoryKeyStore
) -> None:
    with pytest.raises(Conflict, match="is active"):
        retire_signing_key(signers.by_arn[ARN_1].kid, signing=signing, store=store, now=NOW)
    assert store.registry.generation == 0


def test_a_concurrent_change_is_a_conflict(
    signing: PolicySigning, signers: FakeSigners, store: MemoryKeyStore
) -> None:
    register_signing_key(ARN_2, signing=signing, store=store, now=NOW)

    class Racing(MemoryKeyStore):
        def get_registry(self) -> KeyRegistry:
            seen = store.registry
            store.registry = KeyRegistry(seen.generation + 1, seen.keys)  # someone else
            return seen

        def put_registry(self, registry: KeyRegistry, expected_generation: int) -> None:
            store.put_registry(registry, expected_generation)

    with pytest.raises(Conflict, match="changed meanwhile"):
        activate_signing_key(signers.by_arn[ARN_2].kid, signing=signing, store=Racing(), now=NOW)


def test_the_registry_is_read_once_per_minute_per_container(
    signing: PolicySigning, store: MemoryKeyStore
) -> None:
    for seconds in (0, 30, 59):
        signing.sign(CLUSTER, Kind.CHANGE, 1, b"{}", NOW + timedelta(seconds=seconds))
    assert store.reads == 1
    signing.sign(CLUSTER, Kind.CHANGE, 1, b"{}", NOW + timedelta(seconds=60))
    assert store.reads == 2
