"""How the link turns each WebSocket message into a lifecycle event (no network)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

from onprem_gateway.agent.lifecycle import ConnectionClock, Event
from onprem_gateway.agent.link import ControlPlaneLink, LinkSettings
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_sync import LinkStatus, PolicySync
from seg_contract import (
    Access,
    ClusterSettings,
    GatewayKeepalive,
    PushPong,
    PushResync,
    PushRevoked,
)
from tests.unit.gateway_agent.helpers import entry, push, snapshot


def link(
    store: PolicyStore, clock: list[float], keepalive_s: float | None = 240
) -> ControlPlaneLink:
    status = LinkStatus()
    settings = LinkSettings(
        ws_url="wss://ws.example.com/prod?stage=1",
        credential="segc_x",
        node_id="node 1",
        keepalive_interval_s=keepalive_s,
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


def pong(version: int, check: str = "unchecked", checked: int = 0) -> str:
    return PushPong(
        cluster_id="c1",
        version=version,
        server_time=datetime.now(UTC),
        digest_check=check,  # type: ignore[arg-type]
        checked_version=checked,
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


def test_in_sync_records_the_verification() -> None:
    store = loaded_store()
    lk = link(store, [700.0])
    assert lk._on_message(pong(2, "in_sync", 2)) is None
    status = lk.status
    assert (status.verdict, status.last_verified_at, status.last_verified_version) == (
        "in_sync",
        700.0,
        2,
    )
    assert store.current().confirmed_at == 700.0 and status.last_pong_at == 700.0


def test_diverged_asks_for_a_replacement_and_is_counted() -> None:
    store = loaded_store()
    lk = link(store, [700.0])
    assert lk._on_message(pong(2, "diverged", 2)) is Event.DIVERGED
    assert lk.status.digest_mismatches == 1 and lk.status.verdict == "diverged"
    assert lk._replace_reason == "diverged"
    assert lk.status.last_verified_at is None
    assert store.current().confirmed_at == 100.0  # a diverged policy is not vouched for


def test_a_version_the_control_plane_never_commits_gets_the_policy_replaced() -> None:
    store = PolicyStore()
    store.apply_snapshot(snapshot(2, entry("bob", "dev2", Access.ALLOW, 999)), 100.0)
    lk = link(store, [700.0])
    assert lk._on_message(pong(2)) is None  # once: maybe a push overtook the pong
    assert lk._on_message(pong(3)) is Event.DIVERGED  # a report interval later: W < 999
    assert lk._replace_reason == "uncommitted"


def test_a_full_resync_asks_for_a_replacement() -> None:
    lk = link(loaded_store(), [1.0])
    raw = PushResync(cluster_id="c1", version=2, full=True).model_dump_json()
    assert lk._on_message(raw) is Event.RESYNC_FULL


def test_a_pong_ends_the_unresponsive_state() -> None:
    lk = link(loaded_store(), [900.0])
    lk.status.unresponsive_since = 850.0
    lk._on_message(pong(2))
    assert lk.status.unresponsive_since is None


def test_the_keepalive_interval_follows_the_cluster_unless_the_node_is_shorter() -> None:
    store = PolicyStore()
    snap = snapshot().model_copy(update={"settings": ClusterSettings(report_interval_s=45)})
    store.apply_snapshot(snap, 1.0)
    assert link(store, [1.0], keepalive_s=None).keepalive_interval_s() == 45
    assert link(store, [1.0], keepalive_s=2).keepalive_interval_s() == 2
    assert link(store, [1.0], keepalive_s=240).keepalive_interval_s() == 45


class SentFrames:
    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send(self, text: str) -> None:
        self.frames.append(text)


async def keepalive_of(store: PolicyStore) -> dict[str, object]:
    lk = link(store, [500.0])
    ws = SentFrames()
    lk._ws = ws  # type: ignore[assignment]
    lk._conn_clock = ConnectionClock(0.0, 0.0, 30, 6600, pong_timeout_s=10)
    await lk._send_keepalive()
    assert lk._conn_clock.awaiting_since is not None  # the pong deadline runs
    (frame,) = ws.frames
    return dict(GatewayKeepalive.model_validate_json(frame).model_dump())


async def test_an_exact_node_reports_its_digest() -> None:
    store = loaded_store()
    sent = await keepalive_of(store)
    assert sent["policy_version"] == 2
    assert sent["digest"] == store.current().digest_hex() and len(str(sent["digest"])) == 32


async def test_a_node_holding_something_newer_reports_no_digest() -> None:
    store = loaded_store()
    store.apply_push(push(entry("carol", "dev3", Access.BLOCK, 4)))  # 3 is missing
    sent = await keepalive_of(store)
    assert sent["policy_version"] == 2 and sent["digest"] == ""


def test_a_verdict_on_a_policy_replaced_since_is_not_acted_on() -> None:
    store = loaded_store()
    lk = link(store, [700.0])
    lk._replacements = 1  # a replacement finished after the keepalive went out
    assert lk._on_message(pong(2, "diverged", 2)) is None
    assert lk.status.digest_mismatches == 0 and lk.status.verdict == "unchecked"
    lk._reported_generation = 1  # the next keepalive reports the replacement
    assert lk._on_message(pong(2, "diverged", 2)) is Event.DIVERGED
