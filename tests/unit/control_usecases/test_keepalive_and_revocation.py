"""Keepalives (on the in-memory fakes): the pong states the committed version and the
verdict on the node's digest, which the node store keeps; a connection whose credential
was revoked is told, closed, forgotten and refused; a revocation lists its connections
twice, so a connection the first listing missed is closed too."""

from __future__ import annotations

import pytest

from lambdas.domain.errors import Forbidden
from lambdas.domain.records import Connection
from lambdas.usecases.clusters import RELIST_AFTER_S, revoke_credentials
from lambdas.usecases.policy_versions import write_version
from seg_contract import Access, PushPong
from seg_contract.digest import from_hex
from tests.support.policy import propose_entry

from .world import CLUSTER, KEY, T0, FakeControlPlane


def _write(cp: FakeControlPlane, user: str, access: Access = Access.BLOCK) -> int:
    propose = propose_entry(user, access, at=cp.now)
    return write_version(CLUSTER, propose, stores=cp.versions, now=cp.now).version


def test_the_pong_checks_the_digest_and_the_node_store_keeps_the_verdict() -> None:
    cp = FakeControlPlane()
    node = cp.node("n1")
    node.refresh()
    _write(cp, "alice")
    cp.deliver_all(node)
    assert node.index.version == 1 and node.exact()

    pong = cp.keepalive(node)
    assert (pong.version, pong.digest_check, pong.checked_version) == (1, "in_sync", 1)
    (report,) = cp.nodes.list_nodes(CLUSTER)
    assert (report.digest_check, report.last_verified_at, report.digest_mismatches) == (
        "in_sync",
        "2026-11-27T09:00:00.000000Z",
        0,
    )
    sent = PushPong.model_validate(cp.opened(cp.inbox(node)[-1]))
    assert (sent.version, sent.digest_check, sent.checked_version) == (1, "in_sync", 1)
    assert sent.server_time == cp.now  # the signed issue time: the node's freshness

    # A hand-edited policy file: same versions, another decision.
    tampered = node.index.to_snapshot()
    entry = tampered.devices[0]
    node.index = type(node.index).from_snapshot(
        tampered.model_copy(
            update={"devices": (entry.model_copy(update={"access": Access.ALLOW}),)}
        ),
        0.0,
    )
    cp.tick(30)
    assert cp.keepalive(node).digest_check == "diverged"
    (report,) = cp.nodes.list_nodes(CLUSTER)
    assert (report.digest_check, report.last_verified_at, report.digest_mismatches) == (
        "diverged",
        "2026-11-27T09:00:00.000000Z",  # the last time it was in sync
        1,
    )
    cp.deliver_all(node)  # the node replaces its policy
    assert node.fetches["replace"] == 1
    assert node.index.entry("alice", "dev1").access is Access.BLOCK  # type: ignore[union-attr]
    cp.tick(30)
    assert cp.keepalive(node).digest_check == "in_sync"


def test_without_a_digest_or_a_kept_one_the_check_is_unchecked() -> None:
    cp = FakeControlPlane()
    node = cp.node("n1")
    assert node.keepalive().digest == ""  # nothing loaded: no digest
    assert cp.keepalive(node).digest_check == "unchecked"
    node.refresh()
    for _ in range(40):  # more versions than the control plane keeps digests of
        _write(cp, "bob")
    cp.inbox(node).clear()
    pong = cp.keepalive(node)  # the node is at 0: not kept any more
    assert (pong.version, pong.digest_check, pong.checked_version) == (40, "unchecked", 0)
    cluster = cp.clusters.get_cluster(CLUSTER)
    assert cluster is not None and cluster.watermark.digest_at(0) is None
    assert from_hex(node.digest()) != cluster.watermark.digest


def test_a_keepalive_on_a_revoked_credential_is_told_closed_forgotten_and_refused() -> None:
    cp = FakeControlPlane()
    node = cp.node("n1")
    cp.credentials.revoke_credentials(CLUSTER, T0, KEY)
    with pytest.raises(Forbidden, match="gateway credential revoked"):
        cp.keepalive(node)
    assert [cp.opened(m)["type"] for m in cp.inbox(node)] == ["revoked"]
    assert cp.poster.closed == ["conn-n1"]
    assert cp.connections.get("conn-n1") is None
    assert cp.nodes.list_nodes(CLUSTER) == []  # nothing recorded for a refused keepalive


def test_a_keepalive_on_a_credential_that_is_gone_is_refused_too() -> None:
    cp = FakeControlPlane()
    node = cp.node("n1")
    cp.credentials.items.clear()
    with pytest.raises(Forbidden):
        cp.keepalive(node)
    assert cp.connections.get("conn-n1") is None


class _LaggingIndex:
    """A connection store whose cluster listing misses connections opened just before
    the first listing (DynamoDB's global secondary indexes are eventually consistent)."""

    def __init__(self, inner: object, hidden: set[str]) -> None:
        self.inner, self.hidden, self.listings = inner, hidden, 0

    def list_for_cluster(self, cluster_id: str) -> list[Connection]:
        self.listings += 1
        found = self.inner.list_for_cluster(cluster_id)  # type: ignore[attr-defined]
        if self.listings == 1:
            return [c for c in found if c.connection_id not in self.hidden]
        return list(found)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_revocation_lists_its_connections_again_after_a_pause() -> None:
    cp = FakeControlPlane()
    cp.node("n1")
    cp.node("n2")
    cp.connections.put(Connection("conn-other", CLUSTER, "n3", "k2", T0))
    lagging = _LaggingIndex(cp.connections, hidden={"conn-n2"})
    pauses: list[float] = []
    revoked, closed = revoke_credentials(
        CLUSTER,
        KEY,
        clusters=cp.clusters,
        credentials=cp.credentials,
        connections=lagging,  # type: ignore[arg-type]
        poster=cp.poster,
        signing=cp.signing,
        now=T0,
        sleep=pauses.append,
    )
    assert (revoked, closed, pauses) == ([KEY], 2, [RELIST_AFTER_S])
    assert sorted(cp.poster.closed) == ["conn-n1", "conn-n2"]
    for connection_id in ("conn-n1", "conn-n2"):
        assert [cp.opened(m)["type"] for m in cp.poster.posted[connection_id]] == ["revoked"]
    assert [c.connection_id for c in cp.connections.list_for_cluster(CLUSTER)] == ["conn-other"]
