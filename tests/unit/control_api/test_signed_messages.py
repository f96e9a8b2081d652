"""Every policy message a gateway receives, signed the one way
(``lambdas.usecases.signed_messages``), and verified as a node verifies it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lambdas.usecases.policy_signing import PolicySigning, epoch_ms
from lambdas.usecases.signed_messages import (
    push_frame,
    signed_delta,
    signed_pong,
    signed_snapshot,
)
from seg_contract import (
    ClusterSettings,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushMessage,
    PushPong,
    PushResync,
    PushRevoked,
)
from seg_contract.models import PUSH_MESSAGE
from seg_contract.signing import Applied, Kind, SignedMessage, SignedPayload, Verifier
from tests.support.fakes import ARN_1, FakeSigners, MemoryKeyStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CLUSTER = "c-0123456789"


@pytest.fixture
def signers() -> FakeSigners:
    return FakeSigners(ARN_1)


@pytest.fixture
def signing(signers: FakeSigners) -> PolicySigning:
    return PolicySigning(signers, MemoryKeyStore(), (ARN_1,))


@pytest.fixture
def verifier(signers: FakeSigners) -> Verifier:
    return Verifier([signers.by_arn[ARN_1].public])


def test_snapshots_and_deltas_are_signed_for_their_versions(
    signing: PolicySigning, verifier: Verifier
) -> None:
    snapshot = PolicySnapshot(
        cluster_id=CLUSTER, version=9, generated_at=NOW, settings=ClusterSettings()
    )
    delta = PolicyDelta(cluster_id=CLUSTER, since_version=5, version=9, generated_at=NOW)
    for signed, kind, since in (
        (signed_snapshot(snapshot, signing, NOW), Kind.SNAPSHOT, None),
        (signed_delta(delta, signing, NOW), Kind.DELTA, 5),
    ):
        verified = verifier.verify(
            SignedPayload.from_headers(signed.headers(), signed.payload),
            cluster_id=CLUSTER,
            kinds=kind,
            applied=Applied(),
            now_ms=epoch_ms(NOW),
            since_version=since,
        )
        verified.require_fields(cluster_id=CLUSTER, version=9, since_version=since or 0)


@pytest.mark.parametrize(
    ("message", "kind", "version"),
    [
        (PushChange(cluster_id=CLUSTER, version=10), Kind.CHANGE, 10),
        (PushResync(cluster_id=CLUSTER, version=10, full=True), Kind.RESYNC, 10),
        (PushRevoked(cluster_id=CLUSTER), Kind.REVOKED, 0),
        (PushPong(cluster_id=CLUSTER, version=10, server_time=NOW), Kind.PONG, 10),
    ],
)
def test_each_push_travels_in_a_signed_envelope(
    signing: PolicySigning, verifier: Verifier, message: PushMessage, kind: Kind, version: int
) -> None:
    frame = push_frame(message, signing, NOW)
    received = SignedPayload.from_envelope(SignedMessage.model_validate_json(frame))
    verified = verifier.verify(
        received, cluster_id=CLUSTER, kinds=kind, applied=Applied(), now_ms=epoch_ms(NOW)
    )
    assert verified.statement.version == version
    assert PUSH_MESSAGE.validate_json(verified.payload) == message


def test_a_pong_is_signed_once_for_every_node_told_the_same(
    signing: PolicySigning, signers: FakeSigners, verifier: Verifier
) -> None:
    def pong(verdict: str, at: datetime) -> SignedPayload:
        return signed_pong(
            CLUSTER, 10, digest_check=verdict, checked_version=10, signing=signing, now=at
        )

    first = pong("in_sync", NOW)
    assert pong("in_sync", NOW + timedelta(seconds=30)) is first
    assert pong("diverged", NOW) is not first
    assert signers.by_arn[ARN_1].signed == 2
    parsed = PushPong.model_validate_json(first.payload)
    assert (parsed.server_time, parsed.digest_check) == (NOW, "in_sync")
    verified = verifier.verify(
        first,
        cluster_id=CLUSTER,
        kinds=Kind.PONG,
        applied=Applied(version=10),
        now_ms=epoch_ms(NOW + timedelta(seconds=30)),
    )
    assert verified.statement.issued_at_ms == epoch_ms(NOW)
