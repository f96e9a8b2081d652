"""A cluster from before committed versions, on the real use cases over the in-memory
fakes: the first advance marks it, an advance that can read entries a grace later gives
it its first watermark (the counter at the mark, with the digest of the policy as of
then), and from then on it converges like any cluster."""

from __future__ import annotations

from datetime import timedelta

from lambdas.domain.policy_log import ABANDON_GRACE
from lambdas.domain.records import ClusterRecord
from lambdas.usecases.policy_bootstrap import bootstrap
from lambdas.usecases.policy_versions import write_version
from seg_contract import Access, ClusterSettings, UserCredential
from seg_contract.digest import policy_digest
from tests.support.policy import device_entry, propose_entry

from .world import CLUSTER, T0, FakeControlPlane

GRACE_S = ABANDON_GRACE.total_seconds()


def legacy_control_plane(counter: int = 5) -> FakeControlPlane:
    """A cluster as code from before committed versions left it: entries and settings
    at versions up to ``counter``, no watermark, no log."""
    cp = FakeControlPlane()
    settings = ClusterSettings(unknown_device_action=Access.ALLOW)
    cp.clusters.put_legacy(CLUSTER, counter=counter, settings=settings, settings_version=2)
    for version, user in ((1, "u0"), (3, "u1"), (counter, "u0")):
        entry = device_entry(user, version)
        cp.state.devices[(CLUSTER, entry.key)] = entry
    credential = UserCredential(user="c0", version=4, updated_at=T0)
    cp.state.credentials[(CLUSTER, "c0")] = credential
    return cp


def cluster(cp: FakeControlPlane) -> ClusterRecord:
    found = cp.clusters.get_cluster(CLUSTER)
    assert found is not None
    return found


def stored_digest(cp: FakeControlPlane) -> int:
    devices, credentials = cp.entries.list_all(CLUSTER)
    c = cluster(cp)
    return policy_digest(devices, credentials, c.settings, c.settings_version)


def test_the_first_advance_marks_and_the_cluster_states_version_zero_until_the_grace() -> None:
    cp = legacy_control_plane()
    assert cp.snapshot().version == 0
    mark = cluster(cp).bootstrap
    assert mark is not None and (mark.counter, mark.at) == (5, T0)
    cp.tick(GRACE_S - 1)
    snapshot = cp.snapshot()
    assert snapshot.version == 0 and len(snapshot.devices) == 2  # every entry, all the same
    assert cluster(cp).legacy and cluster(cp).bootstrap == mark  # the mark stays


def test_after_the_grace_w_is_the_counter_with_the_digest_of_the_stored_policy() -> None:
    cp = legacy_control_plane()
    cp.snapshot()
    cp.tick(GRACE_S)
    assert cp.snapshot().version == 5
    c = cluster(cp)
    assert not c.legacy and c.bootstrap is None
    assert c.watermark.digest == stored_digest(cp)
    assert c.watermark.digest_at(5) == c.watermark.digest

    # From then on a commit moves W and its digest as for any cluster.
    write_version(CLUSTER, propose_entry("u7"), stores=cp.versions, now=cp.now)
    c = cluster(cp)
    assert c.committed_version == 6 and c.watermark.digest == stored_digest(cp)
    assert c.watermark.digest_at(5) is not None  # the bootstrap's digest is kept as recent


def test_commits_after_the_mark_count_from_the_counter_at_the_mark() -> None:
    cp = legacy_control_plane()
    cp.advance()  # the mark at 5
    at_mark = stored_digest(cp)
    write_version(CLUSTER, propose_entry("u0", Access.ALLOW), stores=cp.versions, now=cp.now)
    write_version(CLUSTER, propose_entry("u8"), stores=cp.versions, now=cp.now)
    assert cluster(cp).legacy and cluster(cp).committed_version == 0  # not before the grace

    cp.tick(GRACE_S)
    write_version(CLUSTER, propose_entry("u9"), stores=cp.versions, now=cp.now)
    c = cluster(cp)
    assert c.committed_version == 8 and c.watermark.digest == stored_digest(cp)
    assert c.watermark.digest_at(5) == at_mark


def test_a_keepalive_only_marks_a_snapshot_bootstraps() -> None:
    cp = legacy_control_plane()
    node = cp.node("n1")  # (it has fetched nothing yet)
    cp.keepalive(node)
    assert cluster(cp).bootstrap is not None
    cp.tick(GRACE_S)
    pong = cp.keepalive(node)  # the keepalive path reads no entries
    assert pong.version == 0 and cluster(cp).legacy

    cp.snapshot()
    assert cluster(cp).committed_version == 5


def test_nodes_of_a_bootstrapped_cluster_converge_and_are_found_in_sync() -> None:
    cp = legacy_control_plane()
    nodes = [cp.node("n1"), cp.node("n2")]
    for node in nodes:
        node.refresh()  # version 0, every entry
    cp.tick(GRACE_S)
    cp.snapshot()  # marks (the first advance)
    write_version(CLUSTER, propose_entry("u3"), stores=cp.versions, now=cp.now)
    cp.tick(GRACE_S)
    write_version(CLUSTER, propose_entry("u4"), stores=cp.versions, now=cp.now)
    assert cluster(cp).committed_version == 7

    for node in nodes:
        cp.inbox(node).clear()  # every push lost
        cp.keepalive(node)
        cp.deliver_all(node)  # the pong says 7: the delta from 0 is 410, the snapshot taken
        assert node.index.version == 7 and node.exact()
        pong = cp.keepalive(node)
        assert pong.digest_check == "in_sync" and pong.checked_version == 7
        assert node.decisions() == {e.key: e.access for e in cp.entries.list_all(CLUSTER)[0]}


def test_a_write_without_the_log_after_the_mark_begins_again() -> None:
    cp = legacy_control_plane()
    cp.advance()  # the mark at 5
    late = device_entry("u5", 6)  # an old writer, still running after the mark
    cp.state.devices[(CLUSTER, late.key)] = late
    cp.clusters.next_version(CLUSTER)
    cp.tick(GRACE_S)
    assert cp.snapshot().version == 0
    mark = cluster(cp).bootstrap
    assert mark is not None and (mark.counter, mark.at) == (6, cp.now)

    cp.tick(GRACE_S)
    assert cp.snapshot().version == 6
    assert cluster(cp).watermark.digest == stored_digest(cp)


def test_concurrent_bootstraps_store_one_watermark() -> None:
    cp = legacy_control_plane()
    cp.advance()
    cp.tick(GRACE_S)
    seen = cluster(cp)  # two advancers read the item before either wrote
    kwargs = {
        "clusters": cp.clusters,
        "log": cp.log,
        "entries": cp.entries,
        "now": cp.now,
        "grace": timedelta(seconds=GRACE_S),
    }
    first = bootstrap(seen, **kwargs)  # type: ignore[arg-type]
    second = bootstrap(seen, **kwargs)  # type: ignore[arg-type]  # its write is refused
    assert first == second == cluster(cp)
    assert first.committed_version == 5 and not first.legacy
