"""Convergence you can prove, against the control-plane double: the digest the node
reports, the repair after a ``diverged`` verdict, committed-version semantics, a hung
control plane noticed by the pong deadline, and 401/403 that are not the control
plane's."""

from __future__ import annotations

from onprem_gateway.agent.lifecycle import Event, State
from onprem_gateway.agent.node import Node
from seg_contract import Access, PushResync
from seg_contract.digest import from_hex
from seg_contract.signing import Kind, encode_record
from tests.integration.gateway_agent.conftest import ConfigFactory, admin_get, eas_post, running
from tests.integration.gateway_agent.control_plane_double import (
    CLUSTER,
    ControlPlaneDouble,
    eventually,
)

BOB = "Cmd=Sync&User=bob&DeviceId=dev2&DeviceType=iPhone"
FAST = {"keepalive_interval_s": 0.2, "pong_timeout_s": 1.0}


def access(node: Node, user: str, device: str) -> Access | None:
    found = node.store.current().entry(user, device)
    return None if found is None else found.access


def signed_but_diverged_journal(double: ControlPlaneDouble, config_state_dir, version: int) -> None:  # type: ignore[no-untyped-def]
    """A last-known-good journal that verifies but disagrees with what the control plane
    holds (it signed it, then lost or rewrote what it said: a control-plane bug; a node
    never loads an edited file, see test_signed_policy): bob's block is an allow."""
    snap = double.snapshot()
    devices = tuple(
        e.model_copy(update={"access": Access.ALLOW, "version": version}) if e.user == "bob" else e
        for e in snap.devices
    )
    edited = snap.model_copy(update={"devices": devices})
    signed = double.sign(Kind.SNAPSHOT, edited.version, edited.model_dump_json().encode())
    config_state_dir.mkdir(parents=True, exist_ok=True)
    (config_state_dir / "policy.journal").write_bytes(encode_record(signed))


async def test_an_exact_node_reports_its_digest_and_the_control_plane_finds_it_in_sync(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double, **FAST)) as node:
        await eventually(lambda: node.link_status.verdict == "in_sync", what="in sync")
        sent = double.keepalives[-1]
        assert sent["policy_version"] == 2
        assert from_hex(sent["digest"]) == node.store.current().digest()
        assert sent["digest"] == double.digest_at(2)
        body = (await admin_get(node, "/readyz")).json()["control_plane"]
        assert body["verification"]["verdict"] == "in_sync"
        assert body["verification"]["last_verified_version"] == 2
        assert body["up"] is True and body["unresponsive"] is False
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_policy_exact 1.0" in metrics
        assert "seg_gateway_policy_last_verified_timestamp_seconds 0.0" not in metrics


async def test_a_diverged_policy_is_replaced_by_the_snapshot(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, **FAST)
    signed_but_diverged_journal(
        double, config.state_dir, version=2
    )  # same version: exact, wrong digest
    async with running(config) as node:
        assert access(node, "bob", "dev2") is Access.ALLOW  # what the file says, at first
        await eventually(lambda: node.link_status.digest_mismatches >= 1, what="diverged")
        await eventually(lambda: access(node, "bob", "dev2") is Access.BLOCK, what="replaced")
        await eventually(lambda: node.link_status.verdict == "in_sync", what="in sync after")
        assert node.link_status.replacements == {"diverged": 1}
        assert (await eas_post(node.listen_port, BOB)).status_code == 403
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_policy_digest_mismatch_total 1.0" in metrics
        assert 'seg_gateway_policy_replacements_total{reason="diverged"} 1.0' in metrics
        # The repair went through a full snapshot, not the 304 the refresh got.
        assert "diverged" in double.verdicts and double.verdicts[-1] == "in_sync"


async def test_an_inflated_version_is_replaced_although_it_never_reports_a_digest(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, **FAST)
    signed_but_diverged_journal(double, config.state_dir, version=999)  # newest wins would keep it
    async with running(config) as node:
        await eventually(lambda: access(node, "bob", "dev2") is Access.BLOCK, what="replaced")
        assert node.link_status.replacements.get("uncommitted") == 1
        assert node.store.current().exact and node.store.current().version == 2
        await eventually(lambda: node.link_status.verdict == "in_sync", what="in sync after")


async def test_committed_versions_and_out_of_order_writes_converge(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double, **FAST)) as node:
        await eventually(lambda: node.link_status.verdict == "in_sync", what="settled")
        slow = double.begin("carol", "dev3", Access.BLOCK)  # v3, not written yet
        fast = double.begin("dave", "dev4", Access.BLOCK)  # v4
        double.write(fast)
        assert double.version == 2  # v3 is not settled: nothing beyond 2 is stated
        keepalives = len(double.keepalives)
        await eventually(lambda: len(double.keepalives) > keepalives + 1, what="two pongs")
        assert node.store.current().version == 2 and node.link_status.verdict == "in_sync"
        double.write(slow)  # W = 4: each committed version is pushed once
        await double.push_version(3)
        await double.push_version(4)
        await eventually(lambda: node.store.current().version == 4, what="caught up")
        assert node.store.current().exact
        assert access(node, "carol", "dev3") is Access.BLOCK
        assert access(node, "dave", "dev4") is Access.BLOCK
        await eventually(
            lambda: (
                double.keepalives[-1]["policy_version"] == 4 and double.verdicts[-1] == "in_sync"
            ),
            what="in sync at 4",
        )


async def test_a_snapshot_holding_a_write_beyond_w_costs_at_most_one_replacement(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    stuck = double.begin("carol", "dev3", Access.BLOCK)  # v3: its writer hangs
    double.write(double.begin("dave", "dev4", Access.BLOCK))  # v4 written
    async with running(make_config(double, **FAST)) as node:
        # The start-up snapshot says W = 2 and holds v4's write: not exact, no digest.
        await eventually(lambda: access(node, "dave", "dev4") is Access.BLOCK, what="v4 held")
        keepalives = len(double.keepalives)
        await eventually(lambda: len(double.keepalives) > keepalives + 5, what="many pongs")
        assert node.link_status.replacements.get("uncommitted", 0) <= 1
        assert all(k["digest"] == "" for k in double.keepalives[keepalives:])
        double.write(stuck)
        await double.push_version(3)
        await double.push_version(4)
        await eventually(lambda: node.link_status.verdict == "in_sync", what="in sync at 4")
        assert node.store.current().version == 4


async def test_an_abandoned_version_is_never_pushed_and_a_pong_moves_the_node_past_it(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double, **FAST)) as node:
        await eventually(lambda: node.link_status.verdict == "in_sync", what="settled")
        dead = double.begin("carol", "dev3", Access.BLOCK)  # v3: its writer dies
        live = double.begin("dave", "dev4", Access.QUARANTINE)  # v4
        double.write(live)
        double.abandon(dead)  # fenced off: W = 4, and only 4 is pushed
        await double.push_version(4)
        await eventually(lambda: node.store.current().version == 4, what="past the hole")
        assert access(node, "dave", "dev4") is Access.QUARANTINE
        assert access(node, "carol", "dev3") is None
        await eventually(lambda: node.link_status.verdict == "in_sync", what="in sync at 4")


async def test_a_full_resync_replaces_the_policy(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, **FAST)
    signed_but_diverged_journal(double, config.state_dir, version=999)
    async with running(config) as node:
        await eventually(lambda: node.link_status.state is State.CONNECTED, what="connected")
        await double.push(PushResync(cluster_id=CLUSTER, version=2, full=True, reason="test"))
        await eventually(lambda: access(node, "bob", "dev2") is Access.BLOCK, what="replaced")
        assert node.link_status.replacements.get("resync_full", 0) >= 1


async def test_a_hung_control_plane_is_noticed_shown_and_reconnected(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double, keepalive_interval_s=0.2, pong_timeout_s=0.3)) as node:
        await eventually(lambda: node.link_status.verdict == "in_sync", what="settled")
        connects = double.ws_connects
        double.answer_keepalives = False  # accepts keepalives, never answers
        await eventually(lambda: node.link_status.pong_deadline_misses >= 1, what="deadline")
        await eventually(lambda: double.ws_connects > connects, what="reconnected")
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 200  # the node keeps enforcing: still ready
        link = ready.json()["control_plane"]
        assert link["unresponsive"] is True and "unresponsive" in link["problem"]
        assert link["up"] is False
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_control_plane_unresponsive 1.0" in metrics
        assert "seg_gateway_control_plane_up 0.0" in metrics
        assert "seg_gateway_pong_deadline_misses_total 0.0" not in metrics
        assert any(event is Event.PONG_OVERDUE for _, event, _ in node.link.lifecycle.history)  # type: ignore[union-attr]
        double.answer_keepalives = True  # it thaws
        await eventually(lambda: node.link_status.unresponsive_since is None, what="answers")
        assert (await admin_get(node, "/readyz")).json()["control_plane"]["up"] is True


async def test_a_refusal_without_the_control_planes_mark_is_retried_not_fatal(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.refuse_unmarked = 403  # a WAF in the path refuses everything for a while
    async with running(make_config(double)) as node:
        await eventually(lambda: double.requests.count("GET /ws") >= 2, what="retries")
        status = node.link_status
        history = node.link.lifecycle.history  # type: ignore[union-attr]
        # The handshake's refusal is checked over HTTP before the link decides: wait for it.
        await eventually(
            lambda: any(event is Event.CREDENTIAL_NOT_REJECTED for _, event, _ in history),
            what="the refusal judged not the control plane's",
        )
        assert not status.fatal and status.state is not State.REJECTED
        # Each retry's handshake restates the refusal before it is judged again: the
        # diagnosis is what the link says once judged, not at every instant.
        await eventually(lambda: "proxy or WAF" in status.last_error, what="the diagnosis")
        ready = (await admin_get(node, "/readyz")).json()
        assert not any("rejected" in r or "revoked" in r for r in ready["reasons"])
        double.refuse_unmarked = None  # the WAF rule is fixed
        await eventually(lambda: status.state is State.CONNECTED, what="connected", timeout=10)
        await eventually(lambda: node.store.current().version == 2, what="policy fetched")


async def test_a_handshake_refusal_that_lost_its_mark_is_confirmed_over_http(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.revoked = True
    double.ws_refusal_marked = False  # API Gateway dropped the header from the 401
    async with running(make_config(double)) as node:
        await eventually(lambda: node.link_status.state is State.REJECTED, what="rejected")
        history = [(before, event) for before, event, _ in node.link.lifecycle.history]  # type: ignore[union-attr]
        assert (State.CONNECTING, Event.CONNECT_REFUSED_UNMARKED) in history
        assert (State.CHECKING_CREDENTIAL, Event.CREDENTIAL_REJECTED) in history
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503 and "rejected" in " ".join(ready.json()["reasons"])
        connects = double.requests.count("GET /ws")
        await eventually(lambda: True)
        assert double.requests.count("GET /ws") == connects  # never reconnects with it
