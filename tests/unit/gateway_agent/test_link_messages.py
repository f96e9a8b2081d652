"""How the link turns each WebSocket message into a lifecycle event (no network)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

from onprem_gateway.agent.lifecycle import Event
from onprem_gateway.agent.link import ControlPlaneLink, LinkSettings
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_sync import LinkStatus, PolicySync
from seg_contract import Access, PushPong, PushResync, PushRevoked
from tests.unit.gateway_agent.helpers import entry, push, snapshot


def link(store: PolicyStore, clock: list[float]) -> ControlPlaneLink:
    status = LinkStatus()
    settings = LinkSettings(
        ws_url="wss://ws.example.com/prod?stage=1",
        credential="segc_x",
        node_id="node 1",
        keepalive_interval_s=240,
        reconnect_after_s=6600,
        open_timeout_s=5,
        refresh_interval_override_s=None,
        ca_bundle=Path("/nonexistent"),
    )
    sync = PolicySync(None, store, status)  # type: ignore[arg-type]  # never fetches here
    return ControlPlaneLink(
        settings,
        sync,
        store,
        status,
        backoff=lambda: itertools.repeat(1.0),
        spool_depth=lambda: 0,
        clock=lambda: clock[0],
    )


def loaded_store() -> PolicyStore:
    store = PolicyStore()
    store.apply_snapshot(snapshot(), 100.0)
    return store


def pong(version: int) -> str:
    return PushPong(
        cluster_id="c1", version=version, server_time=datetime.now(UTC)
    ).model_dump_json()


def test_the_next_push_applies_silently() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    assert lk._on_message(push(entry("alice", "dev1", Access.BLOCK, 3)).model_dump_json()) is None
    assert store.current().version == 3 and lk.status.pushes == 1


def test_a_push_beyond_the_next_version_is_a_gap_but_still_applies() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    raw = push(entry("alice", "dev1", Access.BLOCK, 9)).model_dump_json()
    assert lk._on_message(raw) is Event.PUSH_GAP
    assert store.current().entry("alice", "dev1").access is Access.BLOCK  # type: ignore[union-attr]


def test_pong_at_our_version_confirms_and_ahead_asks_for_a_delta() -> None:
    store = loaded_store()
    lk = link(store, [500.0])
    assert lk._on_message(pong(2)) is None
    assert store.current().confirmed_at == 500.0
    assert lk._on_message(pong(5)) is Event.PONG_AHEAD


def test_resync_and_revoked() -> None:
    lk = link(loaded_store(), [1.0])
    assert lk._on_message(PushResync(cluster_id="c1", version=4).model_dump_json()) is Event.RESYNC
    revoked = PushRevoked(cluster_id="c1").model_dump_json()
    assert lk._on_message(revoked) is Event.REVOKED_PUSH
    assert "revoked" in lk.status.fatal_reason


def test_unknown_messages_and_other_clusters_are_ignored() -> None:
    store = loaded_store()
    lk = link(store, [1.0])
    assert lk._on_message('{"type": "party"}') is None
    assert lk._on_message("not json") is None
    other = push(entry("alice", "dev1", Access.BLOCK, 3)).model_copy(update={"cluster_id": "c2"})
    assert lk._on_message(other.model_dump_json()) is None
    assert store.current().version == 2


def test_the_websocket_url_names_the_node() -> None:
    lk = link(loaded_store(), [1.0])
    assert lk._ws_url() == "wss://ws.example.com/prod?stage=1&node_id=node+1"
