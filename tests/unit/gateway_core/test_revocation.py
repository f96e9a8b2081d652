"""Which in-flight requests a policy change may affect (``core.revocation``)."""

from __future__ import annotations

from onprem_gateway.core.revocation import EVERYONE, NOTHING, Affected, affected
from seg_contract import Access, ClusterSettings, PolicyDelta, PushChange, PushPong
from tests.unit.gateway_core.builders import T0, credential, entry, snapshot


def test_a_snapshot_or_new_settings_affect_everyone() -> None:
    assert affected(snapshot()) == EVERYONE
    push = PushChange(cluster_id="c1", version=3, settings=ClusterSettings(test_mode=True))
    assert affected(push) == EVERYONE
    delta = PolicyDelta(
        cluster_id="c1", since_version=1, version=2, generated_at=T0, settings=ClusterSettings()
    )
    assert affected(delta) == EVERYONE


def test_entries_and_credentials_affect_their_users_normalised() -> None:
    push = PushChange(
        cluster_id="c1",
        version=3,
        devices=(entry("CORP\\Alice", "d1", Access.BLOCK), entry("bob@corp.example", "d2")),
        credentials=(credential("Carol"),),
    )
    assert affected(push) == Affected(False, frozenset({"alice", "bob", "carol"}))


def test_empty_changes_and_other_messages_affect_no_one() -> None:
    assert not affected(PushChange(cluster_id="c1", version=3))
    assert affected(PushPong(cluster_id="c1", version=3, server_time=T0)) == NOTHING
    assert affected(None) == NOTHING
