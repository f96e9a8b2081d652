"""The timeline of docs/policy-versions.md, replayed row by row on the real use cases
(in-memory fakes) with the gateway's real policy index and pong judgement, so that the
document cannot drift from the code."""

from __future__ import annotations

from lambdas.domain.policy_log import ABANDON_GRACE, LogState
from lambdas.usecases.policy_versions import write_version
from onprem_gateway.core.convergence import PongAction, judge_pong
from seg_contract import Access
from tests.support.policy import propose_entry

from .world import CLUSTER, FakeControlPlane

REPORT_S = 30


def test_the_documented_timeline() -> None:
    cp = FakeControlPlane()
    for user in ("w1", "w2", "w3", "w4"):
        write_version(CLUSTER, propose_entry(user), stores=cp.versions, now=cp.now)
    node = cp.node("n1")
    node.refresh()
    assert (cp.advance(), node.index.version) == (4, 4)

    # t0: writer A takes 5. t1: the node fetches a snapshot: it says 4, not 5.
    a = cp.clusters.next_version(CLUSTER)
    node.refresh()
    assert (a, node.index.version, node.index.entry("alice", "dev1")) == (5, 4, None)

    # t2: A commits 5, pushes it, advances W. t3: the push is lost.
    write_version(CLUSTER, propose_entry("alice"), stores=cp.versions, now=cp.now, version=a)
    assert cp.advance() == 5
    cp.inbox(node).clear()
    assert node.index.version == 4

    # t4: the keepalive's pong says 5: the delta since 4 brings A's entry.
    assert cp.keepalive(node).version == 5
    cp.deliver_all(node)
    assert node.index.version == 5 and node.index.entry("alice", "dev1") is not None
    cp.inbox(node).clear()

    # t5: writer B takes 6 and dies. t6: writer C takes 7, commits, pushes 7; its advance
    # finds 6 missing and marks it pending.
    assert cp.clusters.next_version(CLUSTER) == 6
    cp.tick(1)
    t6 = cp.now
    write_version(CLUSTER, propose_entry("carol", Access.ALLOW), stores=cp.versions, now=cp.now)
    (six,) = cp.log.read(CLUSTER, 5, 6)
    assert (six.state, six.first_seen, cp.advance()) == (LogState.PENDING, t6, 5)
    cp.deliver_all(node)  # a gap: applied per key, the delta since 5 is empty
    assert node.index.version == 5 and node.index.newest_held_version == 7

    # The second pong after t6 still says 5 while the node holds 7: it replaces its
    # policy with a snapshot (version 5, holding 7's entry), once.
    pending, trusted = None, 0  # what the link keeps between pongs
    actions = []
    for wait in (1, REPORT_S, REPORT_S):  # t6 + 1 s, + 31 s, + 61 s
        cp.tick(wait)
        pong = cp.keepalive(node)
        judgement = judge_pong(
            committed=pong.version,
            digest_check=pong.digest_check.value,
            applied=node.index.version,
            newest_held=node.index.newest_held_version,
            pending_uncommitted=pending,
            trusted_up_to=trusted,
        )
        pending = judgement.pending_uncommitted
        actions.append(judgement.action)
        if judgement.action is PongAction.REPLACE:
            node.replace_policy()
            trusted = node.index.newest_held_version  # the snapshot's own word
    assert actions == [PongAction.CONFIRM, PongAction.REPLACE, PongAction.CONFIRM]
    assert node.index.version == 5 and node.index.entry("carol", "dev1") is not None
    cp.inbox(node).clear()

    # t6 + 90 s: an advance fences 6 and moves W over 6 and 7; the pong says 7, the
    # delta since 5 brings the node to 7, exact and in sync.
    cp.now = t6 + ABANDON_GRACE
    pong = cp.keepalive(node)
    (six,) = cp.log.read(CLUSTER, 5, 6)
    assert (pong.version, six.state) == (7, LogState.ABANDONED)
    cp.deliver_all(node)
    assert node.index.version == 7 and node.exact()
    assert cp.keepalive(node).digest_check == "in_sync"
