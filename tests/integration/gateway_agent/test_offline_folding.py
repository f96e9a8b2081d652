"""A node cut off from its control plane folds its access events and delivers every
request's count once it is back; a spool near full or evicting shows in /readyz (still
ready) and /metrics."""

from __future__ import annotations

import asyncio
from collections import Counter

from onprem_gateway.agent.reporter import batches
from seg_contract import Access
from tests.integration.gateway_agent.conftest import (
    ConfigFactory,
    admin_get,
    eas_post,
    running,
)
from tests.integration.gateway_agent.control_plane_double import ControlPlaneDouble, eventually
from tests.unit.gateway_agent.helpers import event

ALICE = "Cmd=Sync&User=alice&DeviceId=dev1&DeviceType=iPhone"
BOB = "Cmd=FolderSync&User=bob&DeviceId=dev2&DeviceType=Android"


async def test_cut_off_it_folds_then_delivers_every_request_with_correct_totals(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.events_status = 503  # the control plane cannot take events
    async with running(make_config(double)) as node:
        await eventually(lambda: node.store.current().version == 2)
        await eas_post(node.listen_port, ALICE)
        await eventually(lambda: node.reporter.folding, what="folding after a failed POST")
        ready = (await admin_get(node, "/readyz")).json()
        assert ready["ready"] and ready["spool"]["folding"]
        for _ in range(10):
            await asyncio.gather(eas_post(node.listen_port, ALICE), eas_post(node.listen_port, BOB))
        await eventually(lambda: node.reporter.open_events >= 20, what="folded")
        assert node.reporter.open_records <= 4  # 2 devices x (allow, block), per window
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_events_folding 1.0" in metrics
        assert "seg_gateway_fold_open_events" in metrics
        # The control plane is back: the table is spooled, everything is delivered.
        double.events_status = 202
        await eventually(
            lambda: sum(e.count for b in double.batches for e in b.events) == 21,
            what="every request delivered",
            timeout=10,
        )
        await eventually(lambda: not node.reporter.folding and not node.reporter.spool)
        assert node.reporter.sent_events == 21
        await eas_post(node.listen_port, ALICE)  # online again: one event, as before
        await eventually(lambda: sum(e.count for b in double.batches for e in b.events) == 22)
        # Acknowledged too: a batch received but not yet acknowledged when shutdown
        # cancels the sender is sent again (harmless: the control plane de-duplicates).
        await eventually(lambda: not node.reporter.spool, what="acknowledged")
    events = [e for b in double.batches for e in b.events]
    requests = Counter()
    for e in events:
        requests[(e.user, e.decision)] += e.count
    assert requests == {("alice", Access.ALLOW): 12, ("bob", Access.BLOCK): 10}
    assert len(events) < 22 and len({e.event_id for e in events}) == len(events)
    assert events[-1].count == 1 and events[-1].first_at is None


async def test_a_spool_near_full_then_evicting_shows_in_readyz_and_metrics(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.events_status = 503  # nothing drains
    async with running(make_config(double, max_spool_bytes=65536)) as node:
        await eventually(lambda: node.store.current().version == 2)
        spool = node.reporter.spool
        ready = (await admin_get(node, "/readyz")).json()
        assert ready["spool"]["state"] == "ok" and ready["warnings"] == []
        n = 0
        while spool.fill < 0.9:  # a backlog from a long outage
            spool.append_many(list(batches("node-1", [event(n + i) for i in range(10)])))
            n += 10
        response = await admin_get(node, "/readyz")
        body = response.json()
        assert response.status_code == 200 and body["ready"]
        assert body["spool"]["state"] == "near_full" and "near full" in body["warnings"][0]
        metrics = (await admin_get(node, "/metrics")).text
        assert 'seg_gateway_spool_state{state="near_full"} 1.0' in metrics
        assert "seg_gateway_spool_max_bytes 65536.0" in metrics
        while not spool.evicted_events:
            spool.append_many(list(batches("node-1", [event(n + i) for i in range(10)])))
            n += 10
        response = await admin_get(node, "/readyz")
        body = response.json()
        assert response.status_code == 200 and body["ready"]  # proxying continues
        assert body["spool"]["state"] == "evicting" and body["spool"]["evicted_events"] > 0
        assert "evicting" in body["warnings"][0]
        metrics = (await admin_get(node, "/metrics")).text
        assert 'seg_gateway_spool_state{state="evicting"} 1.0' in metrics
        assert "seg_gateway_spool_evicted_events_total 0.0" not in metrics


async def test_folded_events_refused_by_an_older_control_plane_are_kept_and_reported(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    double.events_status = 503  # cut off
    async with running(make_config(double)) as node:
        await eventually(lambda: node.store.current().version == 2)
        await eas_post(node.listen_port, ALICE)
        await eventually(lambda: node.reporter.folding, what="folding after a failed POST")
        # A closed window of folded requests waits in the spool (as after a long outage).
        folded = event(1, "bob").model_copy(update={"count": 5, "first_at": event(0).at})
        node.reporter.spool.append_many(list(batches("node-1", [folded])))
        double.events_status = 422  # back, but from before folded records: refuses them
        await eventually(lambda: node.reporter.folded_refused, what="refusal seen", timeout=10)
        body = (await admin_get(node, "/readyz")).json()
        assert body["ready"] and any("upgrade the control plane" in w for w in body["warnings"])
        metrics = (await admin_get(node, "/metrics")).text
        assert "seg_gateway_events_folded_refused 1.0" in metrics
        assert node.reporter.spool.depth_events == 5  # kept, not dropped
        double.events_status = 202  # upgraded
        await eventually(
            lambda: sum(e.count for b in double.batches for e in b.events if e.user == "bob") == 5,
            what="the folded requests delivered",
            timeout=10,
        )
        await eventually(lambda: not node.reporter.folded_refused)
        body = (await admin_get(node, "/readyz")).json()
        assert not any("upgrade" in w for w in body["warnings"])
