"""The signing-key registry's rotation rules (``lambdas.domain.signing_keys``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lambdas.domain.signing_keys import KeyRegistry, KeyState, RegistryConflict, bootstrap
from tests.unit.control_domain.conftest import NOW

A, B, C = "a" * 24, "b" * 24, "c" * 24
ARN = "arn:aws:kms:us-east-1:123456789012:key/"
LATER = NOW + timedelta(hours=1)


def states(registry: KeyRegistry) -> dict[str, KeyState]:
    return {k.kid: k.state for k in registry.keys}


def first() -> KeyRegistry:
    return bootstrap(A, ARN + "a", "pub-a", NOW)


def test_a_fresh_stack_signs_with_its_first_key() -> None:
    registry = first()
    assert registry.generation == 1
    assert registry.active is not None and registry.active.kid == A
    assert [k.kid for k in registry.trusted] == [A]


def test_a_whole_rotation_moves_each_key_through_its_states() -> None:
    announced = first().register(B, ARN + "b", "pub-b", NOW)
    assert states(announced) == {A: KeyState.ACTIVE, B: KeyState.NEXT}
    assert [k.kid for k in announced.trusted] == [A, B]

    activated = announced.activate(B, LATER)
    assert states(activated) == {A: KeyState.PREVIOUS, B: KeyState.ACTIVE}
    assert [k.kid for k in activated.trusted] == [B, A]
    assert activated.find(A).changed_at == LATER  # type: ignore[union-attr]

    retired = activated.retire(A, LATER)
    assert states(retired) == {A: KeyState.RETIRED, B: KeyState.ACTIVE}
    assert [k.kid for k in retired.trusted] == [B]
    # Each step is a new generation: the version of the key set nodes learn.
    assert [r.generation for r in (announced, activated, retired)] == [2, 3, 4]


def test_an_abandoned_rotation_retires_the_next_key() -> None:
    retired = first().register(B, ARN + "b", "pub-b", NOW).retire(B, NOW)
    assert states(retired) == {A: KeyState.ACTIVE, B: KeyState.RETIRED}


ROTATING = first().register(B, ARN + "b", "pub-b", NOW)
ROTATED = ROTATING.activate(B, NOW)


@pytest.mark.parametrize(
    ("registry", "change", "message"),
    [
        (KeyRegistry(), lambda r: r.register(B, ARN + "b", "p", NOW), "no active key"),
        (ROTATING, lambda r: r.register(C, ARN + "c", "p", NOW), "already next"),
        (ROTATED, lambda r: r.register(C, ARN + "c", "p", NOW), "retire it first"),
        (first(), lambda r: r.register(A, ARN + "a", "p", NOW), "already registered"),
        (first(), lambda r: r.register(B, ARN + "a", "p", NOW), "already registered"),
        (first(), lambda r: r.activate(A, NOW), "only a next key activates"),
        (first(), lambda r: r.activate(B, NOW), "no key"),
        (first(), lambda r: r.retire(A, NOW), "is active"),
        (ROTATED.retire(A, NOW), lambda r: r.retire(A, NOW), "retired already"),
    ],
)
def test_transitions_that_would_leave_nodes_without_a_trusted_key_are_refused(
    registry: KeyRegistry, change, message: str
) -> None:
    with pytest.raises(RegistryConflict, match=message):
        change(registry)
