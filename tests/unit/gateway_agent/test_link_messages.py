"""How the link turns each WebSocket message into a lifecycle event (no network), and
what it does with one that does not verify."""

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
    PushChange,
    PushPong,
    PushResync,
    PushRevoked,
)
from seg_contract.signing import Kind, LocalSigner, SignedMessage
from tests.unit.gateway_agent.helpers import (
    entry,
    push,
    sign,
    signed_push,
    snapshot,
    trust,
)


def link(
    store: PolicyStore, clock: list[float], keepalive_s: float | None = 240
) -> ControlPlaneLink:
    status = LinkStatus()
    node_trust = trust(lambda: clock[0])
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
    sync = PolicySync(None, store, status, node_trust)  # type: ignore[arg-type]  # no fetches
    return ControlPlaneLink(
        settings,
        sync,
        store,
        status,
        node_trust,
        backoff=lambda: itertools.repeat(1.0),
        spool_depth=lambda: 0,
        clock=lambda: clock[0],
    )


def loaded_store() -> PolicyStore:
    store = PolicyStore()
    store.apply_snapshot(snapshot(), 100.0)
    return store


def pong(version: int, check: str = "unchecked", checked: int = 0, *, at: float) -> str:
    message = PushPong(
        cluster_id="c1",
        version=version,
        server_time=datetime.fromtimestamp(at, UTC),
        digest_check=check,  # type: ignore[arg-type]
        checked_version=checked,
    )
    return signed_push(message, at)


def change(e: object, at: float = 200.0) -> str:
    return signed_push(push(e), at)  # type: ignore[arg-type]


def test_the_next_push_applies_silently() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    assert lk._on_message(change(entry("alice", "dev1", Access.BLOCK, 3))) is None
    assert store.current().version == 3 and lk.status.pushes == 1
    assert lk._trust.rejections.total == 0


def test_a_push_beyond_the_next_version_is_a_gap_but_still_applies() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    assert lk._on_message(change(entry("alice", "dev1", Access.BLOCK, 9))) is Event.PUSH_GAP
    assert store.current().entry("alice", "dev1").access is Access.BLOCK  # type: ignore[union-attr]


def test_pong_at_our_version_confirms_and_ahead_asks_for_a_delta() -> None:
    store = loaded_store()
    lk = link(store, [520.0])
    assert lk._on_message(pong(2, at=500.0)) is None
    assert store.current().confirmed_at == 500.0  # the signed issue time, not the clock
    assert lk._on_message(pong(5, at=510.0)) is Event.PONG_AHEAD


def test_resync_and_revoked() -> None:
    lk = link(loaded_store(), [1.0])
    resync = signed_push(PushResync(cluster_id="c1", version=4), 1.0)
    assert lk._on_message(resync) is Event.RESYNC
    assert lk._on_message(signed_push(PushRevoked(cluster_id="c1"), 1.0)) is Event.REVOKED_PUSH
    assert "revoked" in lk.status.fatal_reason


def test_unknown_messages_and_other_clusters_are_refused_and_counted() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    assert lk._on_message('{"type": "party"}') is None
    assert lk._on_message("not json") is None
    other = push(entry("alice", "dev1", Access.BLOCK, 3)).model_copy(update={"cluster_id": "c2"})
    assert lk._on_message(signed_push(other, 200.0)) is None
    assert store.current().version == 2 and lk.status.pushes == 0
    assert lk._trust.rejections.by_reason == {"malformed": 2, "wrong_cluster": 1}


def tampered(raw: str) -> str:
    """The envelope with one character of its payload changed (a block made an allow)."""
    envelope = SignedMessage.model_validate_json(raw)
    payload = envelope.payload.replace('"block"', '"allow"', 1)
    assert payload != envelope.payload
    return envelope.model_copy(update={"payload": payload}).model_dump_json()


def test_a_push_altered_on_the_way_is_not_applied_and_is_counted() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    raw = change(entry("alice", "dev1", Access.BLOCK, 3))
    assert lk._on_message(tampered(raw)) is None
    assert store.current().version == 2
    assert store.current().entry("alice", "dev1").access is Access.ALLOW  # type: ignore[union-attr]
    rejections = lk._trust.rejections
    assert rejections.by_reason == {"payload_mismatch": 1} and rejections.last_source == "push"
    assert lk._on_message(raw) is None  # the authentic one still applies
    assert store.current().entry("alice", "dev1").access is Access.BLOCK  # type: ignore[union-attr]


def test_an_unsigned_push_is_refused() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    plain = push(entry("alice", "dev1", Access.BLOCK, 3)).model_dump_json()
    assert lk._on_message(plain) is None
    assert store.current().version == 2
    assert lk._trust.rejections.by_reason == {"unsigned": 1}


def test_a_forged_revocation_or_pong_changes_nothing() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    forger = LocalSigner.generate()
    forged = signed_push(PushRevoked(cluster_id="c1"), 200.0, signer=forger)
    assert lk._on_message(forged) is None
    assert not lk.status.fatal_reason
    lk._conn_clock = ConnectionClock(0.0, 0.0, 30, 6600, pong_timeout_s=10).sent(150.0, 30)
    message = PushPong(cluster_id="c1", version=2, server_time=datetime.now(UTC))
    assert lk._on_message(signed_push(message, 200.0, signer=forger)) is None
    assert lk._conn_clock.awaiting_since is not None  # a forged pong answers nothing
    assert store.current().confirmed_at == 100.0 and lk.status.last_pong_at is None
    assert lk._trust.rejections.by_reason == {"unknown_key": 2}


def test_an_unknown_key_asks_for_a_refresh_of_the_keys_once_a_minute() -> None:
    lk = link(loaded_store(), [200.0])
    forger = LocalSigner.generate()
    raw = signed_push(push(entry("alice", "dev1", Access.BLOCK, 3)), 200.0, signer=forger)
    lk._on_message(raw)
    assert lk._refresh_now.is_set()
    lk._refresh_now.clear()
    lk._on_message(raw)
    assert not lk._refresh_now.is_set()  # not again within the minute


def test_a_payload_of_another_kind_than_signed_is_refused() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    message = PushChange(cluster_id="c1", version=3, devices=(entry("a", "d", Access.BLOCK, 3),))
    as_resync = sign(Kind.RESYNC, 3, message.model_dump_json().encode(), 200.0)
    assert lk._on_message(as_resync.envelope().model_dump_json()) is None
    assert store.current().version == 2
    assert lk._trust.rejections.by_reason == {"wrong_kind": 1}


def test_an_old_push_replayed_is_refused_and_a_duplicate_ignored() -> None:
    store = loaded_store()
    lk = link(store, [2000.0])
    stale = change(entry("alice", "dev1", Access.BLOCK, 3), at=2000.0 - 16 * 60)
    assert lk._on_message(stale) is None
    assert lk._trust.rejections.by_reason == {"expired": 1}
    duplicate = change(entry("alice", "dev1", Access.BLOCK, 2), at=1990.0)
    assert lk._on_message(duplicate) is None  # version 2 is held: a no-op, not a refusal
    assert lk._trust.rejections.total == 1 and lk.status.pushes == 1


def test_a_pong_issued_in_the_future_is_refused() -> None:
    store = loaded_store()
    lk = link(store, [200.0])
    assert lk._on_message(pong(2, at=200.0 + 301)) is None
    assert store.current().confirmed_at == 100.0
    assert lk._trust.rejections.by_reason == {"issued_in_future": 1}


def test_an_older_pong_answers_the_deadline_but_gives_no_freshness() -> None:
    store = loaded_store()
    lk = link(store, [600.0])
    first = pong(2, "in_sync", 2, at=500.0)
    assert lk._on_message(first) is None and store.current().confirmed_at == 500.0
    lk._conn_clock = ConnectionClock(0.0, 0.0, 30, 6600, pong_timeout_s=10).sent(550.0, 30)
    assert lk._on_message(first) is None  # the same signed pong, shared by many nodes
    assert lk._conn_clock.awaiting_since is None  # answered
    assert store.current().confirmed_at == 500.0 and lk.status.verdict == "in_sync"
    assert lk._trust.rejections.total == 0


def test_the_websocket_url_names_the_node() -> None:
    lk = link(loaded_store(), [1.0])
    assert lk._ws_url() == "wss://ws.example.com/prod?stage=1&node_id=node+1"


def test_in_sync_records_the_verification() -> None:
    store = loaded_store()
    lk = link(store, [700.0])
    assert lk._on_message(pong(2, "in_sync", 2, at=690.0)) is None
    status = lk.status
    assert (status.verdict, status.last_verified_at, status.last_verified_version) == (
        "in_sync",
        700.0,
        2,
    )
    assert store.current().confirmed_at == 690.0 and status.last_pong_at == 700.0


def test_diverged_asks_for_a_replacement_and_is_counted() -> None:
    store = loaded_store()
    lk = link(store, [700.0])
    assert lk._on_message(pong(2, "diverged", 2, at=700.0)) is Event.DIVERGED
    assert lk.status.digest_mismatches == 1 and lk.status.verdict == "diverged"
    assert lk._replace_reason == "diverged"
    assert lk.status.last_verified_at is None
    assert store.current().confirmed_at == 100.0  # a diverged policy is not vouched for


def test_a_version_the_control_plane_never_commits_gets_the_policy_replaced() -> None:
    store = PolicyStore()
    store.apply_snapshot(snapshot(2, entry("bob", "dev2", Access.ALLOW, 999)), 100.0)
    lk = link(store, [700.0])
    assert lk._on_message(pong(2, at=690.0)) is None  # once: maybe a push overtook the pong
    assert lk._on_message(pong(3, at=695.0)) is Event.DIVERGED  # an interval later: W < 999
    assert lk._replace_reason == "uncommitted"


def test_a_full_resync_asks_for_a_replacement() -> None:
    lk = link(loaded_store(), [1.0])
    raw = signed_push(PushResync(cluster_id="c1", version=2, full=True), 1.0)
    assert lk._on_message(raw) is Event.RESYNC_FULL


def test_a_pong_ends_the_unresponsive_state() -> None:
    lk = link(loaded_store(), [900.0])
    lk.status.unresponsive_since = 850.0
    lk._on_message(pong(2, at=900.0))
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


async def test_the_keepalive_reports_what_the_node_refused() -> None:
    store = loaded_store()
    lk = link(store, [500.0])
    assert lk._on_message(tampered(change(entry("alice", "dev1", Access.BLOCK, 3), 490.0))) is None
    lk._clock = lambda: 530.0
    ws = SentFrames()
    lk._ws = ws  # type: ignore[assignment]
    lk._conn_clock = ConnectionClock(0.0, 0.0, 30, 6600, pong_timeout_s=10)
    await lk._send_keepalive()
    sent = GatewayKeepalive.model_validate_json(ws.frames[0])
    assert (sent.policy_rejections, sent.last_rejection) == (1, "payload_mismatch")
    assert sent.last_rejection_age_s == 30.0


async def test_a_node_holding_something_newer_reports_no_digest() -> None:
    store = loaded_store()
    store.apply_push(push(entry("carol", "dev3", Access.BLOCK, 4)))  # 3 is missing
    sent = await keepalive_of(store)
    assert sent["policy_version"] == 2 and sent["digest"] == ""


def test_a_verdict_on_a_policy_replaced_since_is_not_acted_on() -> None:
    store = loaded_store()
    lk = link(store, [700.0])
    lk._replacements = 1  # a replacement finished after the keepalive went out
    assert lk._on_message(pong(2, "diverged", 2, at=690.0)) is None
    assert lk.status.digest_mismatches == 0 and lk.status.verdict == "unchecked"
    lk._reported_generation = 1  # the next keepalive reports the replacement
    assert lk._on_message(pong(2, "diverged", 2, at=695.0)) is Event.DIVERGED
