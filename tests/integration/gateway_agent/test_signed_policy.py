"""Signed policy on a running node, against the control-plane double (which signs with
a key the node pins): the journal it re-verifies at start (a tampered or an old one; a
good one: ``test_control_plane_link``), a man in the middle that alters a push, a node
that pins the wrong key, and an air-gapped node's signed file."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from seg_contract import Access, ClusterSettings, FailMode
from seg_contract.signing import Kind, LocalSigner, encode_record, issue
from tests.integration.gateway_agent.conftest import (
    ConfigFactory,
    admin_get,
    eas_post,
    running,
)
from tests.integration.gateway_agent.control_plane_double import (
    CLUSTER,
    ControlPlaneDouble,
    entry,
    eventually,
)
from tests.unit.gateway_agent.helpers import snapshot

ALICE = "Cmd=Sync&User=alice&DeviceId=dev1&DeviceType=iPhone"
BOB = "Cmd=Sync&User=bob&DeviceId=dev2&DeviceType=iPhone"


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


async def test_a_tampered_journal_is_refused_at_start_and_the_node_fails_closed(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double)
    async with running(config) as node:
        await eventually(lambda: node.store.current().version == 2)
        await eventually(lambda: node.journal is not None and node.journal.writes >= 1)
    await double.stop()
    journal = config.state_dir / "policy.journal"
    data = journal.read_bytes()
    journal.write_bytes(data.replace(b'"block"', b'"allow"', 1))  # bob allowed
    async with running(config) as node:
        assert not node.store.current().loaded
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert "last-known-good policy refused (payload_mismatch" in " ".join(body["reasons"])
        assert body["policy"]["rejections"]["by_reason"] == {"payload_mismatch": 1}
        assert body["policy"]["last_rejection"]["source"] == "journal"
        # Fail closed: nothing goes upstream, bob's forged allow least of all.
        assert (await eas_post(node.listen_port, BOB)).status_code in (403, 503)
        assert (await eas_post(node.listen_port, ALICE)).status_code in (403, 503)
        metrics = (await admin_get(node, "/metrics")).text
        assert metric(metrics, 'seg_gateway_policy_rejected_total{reason="payload_mismatch"}') == 1
        assert metric(metrics, "seg_gateway_fail_closed") == 1
    assert list(config.state_dir.glob("policy.journal.corrupt-*"))


def old_journal(double: ControlPlaneDouble, state_dir: Path, fail_mode: FailMode) -> None:
    """An authentic journal whose newest signature is two days old (longer than the
    default max_policy_age_s of one day), written just now."""
    snap = double.snapshot().model_copy(
        update={"settings": ClusterSettings(fail_mode=fail_mode, max_policy_age_s=86_400)}
    )
    issued = datetime.now(UTC) - timedelta(days=2)
    signed = issue(
        double.signer,
        cluster_id=CLUSTER,
        kind=Kind.SNAPSHOT,
        version=snap.version,
        payload=snap.model_dump_json().encode(),
        issued_at_ms=int(issued.timestamp() * 1000),
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "policy.journal").write_bytes(encode_record(signed))


async def test_freshness_is_the_signed_issue_time_and_the_fail_mode_follows(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    await double.stop()  # a node restarted during a long outage
    for mode, allowed in ((FailMode.CLOSED, False), (FailMode.OPEN, True)):
        config = make_config(double, node_id=f"node-{mode.value}")
        config.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in config.state_dir.glob("policy.journal*"):
            stale.unlink()
        old_journal(double, config.state_dir, mode)
        async with running(config) as node:
            index = node.store.current()
            assert index.loaded and time.time() - index.confirmed_at > 86_400
            body = (await admin_get(node, "/readyz")).json()["policy"]
            assert body["freshness"] == "expired" and body["fail_mode"] == mode.value
            status = (await eas_post(node.listen_port, ALICE)).status_code
            assert (status == 200) is allowed, (mode, status)


async def test_a_push_altered_on_the_way_is_not_applied_and_is_reported(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    config = make_config(double, keepalive_interval_s=0.2)
    async with running(config) as node:
        await eventually(lambda: node.store.current().version == 2)
        assert (await eas_post(node.listen_port, ALICE)).status_code == 200
        double.tamper_pushes = True  # a man in the middle from here on
        await double.push_entry(entry("alice", "dev1", Access.BLOCK, 3))
        await eventually(lambda: node.trust.rejections.total >= 1, what="refused")
        assert node.store.current().version == 2
        assert (await eas_post(node.listen_port, ALICE)).status_code == 200  # not applied
        body = (await admin_get(node, "/readyz")).json()
        assert body["ready"] is True  # refusals alone do not take the node out
        assert body["policy"]["last_rejection"]["reason"] == "payload_mismatch"
        assert body["policy"]["last_rejection"]["source"] == "push"
        metrics = (await admin_get(node, "/metrics")).text
        assert metric(metrics, 'seg_gateway_policy_rejected_total{reason="payload_mismatch"}') >= 1
        # The alert reaches the control plane with the next keepalive.
        await eventually(
            lambda: any(k.get("policy_rejections", 0) >= 1 for k in double.keepalives),
            what="alert in a keepalive",
        )
        alert = next(k for k in double.keepalives if k.get("policy_rejections"))
        assert alert["last_rejection"] in ("payload_mismatch", "bad_signature")


async def test_an_air_gapped_node_verifies_its_signed_policy_file(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    key = LocalSigner.generate()
    path = tmp_path / "policy.signed"

    def export(version: int, at: float, *entries: object) -> None:
        snap = snapshot(version, *entries, cluster="site-a")  # type: ignore[arg-type]
        signed = issue(
            key,
            cluster_id="site-a",
            kind=Kind.SNAPSHOT,
            version=version,
            payload=snap.model_dump_json().encode(),
            issued_at_ms=int(at * 1000),
        )
        path.write_bytes(encode_record(signed))

    issued = time.time() - 60
    export(2, issued)
    config = make_config(
        None, policy_file=path, refresh_interval_s=0.1, policy_signing_keys=key.public.spki_b64
    )
    async with running(config) as node:
        index = node.store.current()
        assert index.version == 2 and abs(index.confirmed_at - issued) < 0.01
        await asyncio.sleep(0.5)  # re-read every 0.1 s: the same signed file is no fresher
        assert node.store.current().confirmed_at == index.confirmed_at
        assert node.policy_problem == ""
        export(3, time.time(), entry("alice", "dev1", Access.BLOCK, 3))
        await eventually(lambda: node.store.current().version == 3, what="new export applied")
        data = path.read_bytes()
        path.write_bytes(data.replace(b'"block"', b'"allow"', 1))
        await eventually(lambda: "payload_mismatch" in node.policy_problem, what="refused")
        assert node.store.current().version == 3  # the verified policy stays in force
        assert (await eas_post(node.listen_port, ALICE)).status_code == 403
        body = (await admin_get(node, "/readyz")).json()["policy"]
        assert body["signed"] is True and body["rejections"]["by_reason"]["payload_mismatch"] >= 1


async def test_a_node_that_pins_the_wrong_key_refuses_everything_and_says_why(
    double: ControlPlaneDouble, make_config: ConfigFactory
) -> None:
    wrong = LocalSigner.generate()
    config = make_config(double, policy_signing_keys=wrong.public.spki_b64)
    async with running(config) as node:
        await eventually(lambda: node.trust.rejections.total >= 1, what="refused")
        assert not node.store.current().loaded
        ready = await admin_get(node, "/readyz")
        assert ready.status_code == 503
        reasons = " ".join(ready.json()["reasons"])
        assert "no policy loaded" in reasons and "unknown_key" in reasons
        assert (await eas_post(node.listen_port, ALICE)).status_code in (403, 503)
