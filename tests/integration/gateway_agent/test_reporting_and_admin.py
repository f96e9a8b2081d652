"""Access events end to end (request -> batch -> control plane, spool across a restart)
and the admin port's answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from onprem_gateway.agent import node as node_module
from onprem_gateway.agent.node import Node
from onprem_gateway.agent.policy_store import PolicyOp, compact_op
from onprem_gateway.agent.spool import Spool
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import Access, PolicyDelta
from tests.integration.gateway_agent.conftest import (
    ConfigFactory,
    admin_get,
    eas_post,
    running,
)
from tests.integration.gateway_agent.control_plane_double import ControlPlaneDouble, eventually
from tests.unit.gateway_agent.helpers import entry, snapshot

ALICE = "Cmd=Sync&User=alice&DeviceId=dev1&DeviceType=iPhone"
BOB = "Cmd=FolderSync&User=bob&DeviceId=dev2&DeviceType=Android"


async def test_every_request_becomes_an_access_event_in_a_batch(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: node.store.current().version == 2)
        assert (await eas_post(node.listen_port, ALICE)).status_code == 200
        assert (await eas_post(node.listen_port, BOB)).status_code == 403
        await eventually(lambda: len(double.events) == 2, what="events delivered")
    events = [e for b in double.batches for e in b.events]
    assert {(e.user, e.command, e.decision) for e in events} == {
        ("alice", "Sync", Access.ALLOW),
        ("bob", "FolderSync", Access.BLOCK),
    }
    assert all(
        b.node_id == "node-1" and e.node_id == "node-1" for b in double.batches for e in b.events
    )


async def test_spool_survives_a_restart_and_drains_in_order_when_the_cloud_is_back(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double)
    double.events_status = 503  # the control plane cannot take events
    async with running(config) as node:
        await eventually(lambda: node.store.current().version == 2)
        for _ in range(3):
            await eas_post(node.listen_port, ALICE)
        # Spooled, or (once a POST failed) folded; shutdown spools what is folded.
        await eventually(
            lambda: node.reporter.spool.depth_events + node.reporter.open_events == 3,
            what="spooled or folded",
        )
        await eventually(lambda: node.reporter.folding, what="folding after a failed POST")
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_events_folding 1.0" in metrics
    first_ids = [p.name for p in (config.state_dir / "spool").iterdir()]
    assert first_ids, "the spool is on disk after shutdown"
    await double.stop()
    # Restart with the control plane down: the spool is loaded, more events join it.
    async with running(config) as node:
        assert node.reporter.spool.depth_events == 3
        await eas_post(node.listen_port, BOB)
        await eventually(lambda: node.reporter.spool.depth_events + node.reporter.open_events == 4)
    # The control plane is back: everything drains, oldest first, nothing lost.
    double.events_status = 202
    await double.start()
    config = make_config(double)
    async with running(config) as node:
        await eventually(
            lambda: sum(e.count for b in double.batches for e in b.events) == 4,
            what="drained",
            timeout=10,
        )
        await eventually(lambda: node.reporter.spool.depth_events == 0)
    # Every request counted once, oldest first (a folded record counts its requests).
    users = [e.user for b in double.batches for e in b.events for _ in range(e.count)]
    assert users == ["alice", "alice", "alice", "bob"]
    assert len(set(double.events)) == len(double.events)


async def test_readyz_metrics_and_livez(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: node.store.current().version == 2)
        await eas_post(node.listen_port, ALICE)
        await eas_post(node.listen_port, BOB)
        assert (await admin_get(node, "/livez")).json()["status"] == "alive"
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 200 and ready.json()["reasons"] == []
        text = (await admin_get(node, "/metrics")).text
        for line in (
            'seg_gateway_requests_total{command="Sync",decision="allow",enforced="true"} 1.0',
            'seg_gateway_requests_total{command="FolderSync",decision="block",enforced="true"} 1.0',
            "seg_gateway_policy_version 2.0",
            'seg_gateway_policy_freshness{level="fresh"} 1.0',
            'seg_gateway_push_connection_state{state="connected"} 1.0',
            "seg_gateway_spool_evicted_events_total 0.0",
            "seg_gateway_upstream_up 1.0",
            "seg_gateway_held 0.0",
        ):
            assert line in text, line
        assert 'seg_gateway_upstream_latency_seconds_count{command="Sync"} 1.0' in text
        assert "seg_gateway_policy_age_seconds" in text


async def test_readyz_reports_an_unreachable_upstream(
    double: ControlPlaneDouble, make_config: ConfigFactory, upstream
) -> None:  # type: ignore[no-untyped-def]
    config = make_config(double, upstream_check_interval_s=0.1)
    async with running(config) as node:
        await eventually(lambda: node.store.current().version == 2)
        upstream[0].close()
        await eventually(lambda: node.upstream_ok is False, what="upstream check")
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503
        assert "upstream unreachable" in " ".join(ready.json()["reasons"])


async def test_readyz_without_any_policy_is_not_ready(make_config: ConfigFactory) -> None:
    # A control plane that is not there, and no policy on disk: fail closed.
    dead = ControlPlaneDouble()
    dead.port = 9  # discard port: nothing listens on 127.0.0.1:9
    async with running(make_config(dead)) as node:
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["policy"]["freshness"] == "missing"
        assert "no policy loaded" in " ".join(ready.json()["reasons"])
        assert "seg_gateway_fail_closed 1.0" in (await admin_get(node, "/metrics")).text


async def test_diagnostics_explains_and_rejects_bad_questions(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        await eventually(lambda: node.store.current().version == 2)
        ok = await admin_get(node, "/diagnostics/decision?user=CORP%5CBob&device_id=DEV2")
        body = ok.json()
        assert ok.status_code == 200
        assert body["access"] == "block" and body["question"]["user"] == "bob"
        assert body["steps"] and body["credential_substitution"] == "not configured"
        unknown = (await admin_get(node, "/diagnostics/decision?user=nobody&device_id=x")).json()
        assert unknown["rule"] == "unknown_device"
        for bad in ("?user=alice", "?device_id=x", "?user=a&device_id=b&color=red"):
            answer = await admin_get(node, "/diagnostics/decision" + bad)
            assert answer.status_code == 400 and answer.json()["detail"]
        long_id = "x" * 500
        assert (
            await admin_get(node, f"/diagnostics/decision?user=a&device_id={long_id}")
        ).status_code == 400
        assert (await admin_get(node, "/nope")).status_code == 404


async def test_admin_port_refuses_malformed_and_oversized_requests(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    async with running(make_config(double)) as node:
        for raw, status in (
            (b"POST /livez HTTP/1.1\r\n\r\n", b"405"),
            (b"garbage\r\n\r\n", b"400"),
            (b"GET /livez HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", node.admin_port)
            writer.write(raw)
            await writer.drain()
            answer = await reader.read(200)
            writer.close()
            assert answer.split(b" ")[1] == status, answer


async def test_shutdown_lets_a_held_ping_finish_and_reports_it(
    double: ControlPlaneDouble, make_config: ConfigFactory, upstream
) -> None:  # type: ignore[no-untyped-def]
    upstream[0].delay_s = 0.5
    node = Node(make_config(double, shutdown_grace_s=5))
    await node.start()
    await eventually(lambda: node.store.current().version == 2)
    ping = asyncio.create_task(
        eas_post(node.listen_port, "Cmd=Ping&User=alice&DeviceId=dev1&DeviceType=iPhone")
    )
    await eventually(lambda: upstream[0].requests == 1, what="ping upstream")
    await node.shutdown()  # while the Ping is held
    assert (await ping).status_code == 200
    assert node.shutting_down
    # Its access event went to the control plane (or the spool) during shutdown.
    sent = [e.command for b in double.batches for e in b.events]
    assert "Ping" in sent or node.reporter.spool.depth_events == 1


async def test_an_air_gapped_node_rereads_its_unsigned_policy_file_when_allowed(
    make_config: ConfigFactory, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "policy.json"
    policy.write_text(snapshot(2).model_dump_json())
    config = make_config(
        None, policy_file=policy, refresh_interval_s=0.1, allow_unsigned_policy_file="true"
    )
    async with running(config) as node:
        assert node.link is None and node.store.current().version == 2
        confirmed = node.store.current().confirmed_at
        await eventually(lambda: node.store.current().confirmed_at > confirmed, what="re-read")
        policy.write_text(snapshot(3, entry("alice", "dev1", Access.BLOCK, 3)).model_dump_json())
        await eventually(lambda: node.store.current().version == 3, what="new file applied")
        assert (await eas_post(node.listen_port, ALICE)).status_code == 403
        policy.write_text("{broken")
        await eventually(lambda: "policy file refused" in node.policy_problem)
        assert node.store.current().version == 3  # the policy in force stays
        body = (await admin_get(node, "/readyz")).json()
        assert "policy file refused" in body["policy"]["problem"]
        assert body["policy"]["signed"] is False and "UNSIGNED" in body["policy"]["source"]


async def test_a_reread_policy_file_is_compared_then_the_old_policy_let_go_in_slices(
    make_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The swap's turn does neither: the workers' delta is worked out before it, and the
    # policy taken over is freed a slice per turn after it (``agent.turns``).
    policy = tmp_path / "policy.json"
    policy.write_text(snapshot(2, entry("bob", "dev2", Access.ALLOW, 2)).model_dump_json())
    config = make_config(
        None, policy_file=policy, refresh_interval_s=0.1, allow_unsigned_policy_file="true"
    )
    released: list[set[int]] = []
    release = node_module.release_gradually

    async def spy(references: Iterator[object]) -> None:
        held = list(references)
        released.append({id(o) for o in held})
        await release(iter(held))

    monkeypatch.setattr(node_module, "release_gradually", spy)
    async with running(config) as node:
        ops: list[tuple[PolicyOp, PolicyIndex, PolicyIndex]] = []
        held = [node.store.current()]
        taken_over = {id(o) for o in held[0].references()}

        def listener(op: PolicyOp, index: PolicyIndex) -> None:
            ops.append((op, held[-1], index))
            held.append(index)

        node.store.subscribe(listener)
        policy.write_text(
            snapshot(
                3, entry("bob", "dev2", Access.ALLOW, 2), entry("alice", "dev1", Access.BLOCK, 3)
            ).model_dump_json()
        )
        await eventually(lambda: node.store.current().version == 3, what="new file applied")
        await eventually(lambda: taken_over in released, what="the old policy let go")
        ((op, before, after),) = [o for o in ops if o[0].kind == "snapshot"]
        assert op.changes is not None and op.changes.matches(after, before)
        compact = compact_op(op, before, after)
        assert isinstance(compact.body, PolicyDelta)
        assert [e.user for e in compact.body.devices] == ["alice"]


async def test_events_are_on_disk_while_the_post_hangs_and_delivered_once_it_answers(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, http_timeout_s=60)
    async with running(config) as node:
        await eventually(lambda: node.store.current().version == 2)
        double.freeze_http()  # the control plane takes the POST and does not answer
        for _ in range(5):
            await eas_post(node.listen_port, ALICE)
        await eventually(lambda: node.reporter.spooled_events == 5, what="spooled")
        await eventually(lambda: "POST /gateway/v1/access-events" in double.requests)
        # On disk while the first POST is still waiting for its answer.
        assert not double.batches and node.reporter.failed_posts == 0
        on_disk = Spool(config.state_dir / "spool", max_bytes=1 << 30)  # a second reader
        assert on_disk.depth_events == 5
        on_disk.close()
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_spool_events 5.0" in metrics
        assert "seg_gateway_events_spooled_total 5.0" in metrics
        assert "seg_gateway_spool_oldest_unsent_age_seconds" in metrics
        double.thaw_http()
        await eventually(lambda: len(double.events) >= 5, what="delivered", timeout=15)
        await eventually(lambda: node.reporter.spool.depth_events == 0, what="acknowledged")
    assert len(set(double.events)) == 5  # re-sent batches are the control plane's to dedupe
