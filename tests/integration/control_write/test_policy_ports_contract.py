"""The policy ports' contract, run against the DynamoDB adapters (moto) and the
in-memory fakes (``tests.support.fakes``) alike, so that what the property tests prove
with the fakes holds for the adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from lambdas.composition import Adapters
from lambdas.domain.errors import CommitConflict, Conflict, NotFound, VersionFenced
from lambdas.domain.policy_commit import CommitPlan, Held, Proposal, plan_commit
from lambdas.domain.policy_log import LogState, Watermark, initial_watermark
from lambdas.ports import ClusterStore, PolicyEntryStore, PolicyLog
from seg_contract import Access, ClusterSettings, DeviceEntry, UserCredential
from tests.support.aws import AwsEnv, aws  # noqa: F401  (fixture)
from tests.support.fakes import MemoryClusters, MemoryEntries, MemoryPolicyLog, MemoryPolicyState
from tests.support.policy import T0, device_entry


@dataclass
class Ports:
    clusters: ClusterStore
    entries: PolicyEntryStore
    log: PolicyLog
    # Writes a cluster item as code from before committed versions did (id, counter).
    put_legacy: Callable[[str, int], object]


@pytest.fixture(params=["dynamodb", "memory"])
def ports(request: pytest.FixtureRequest) -> Iterator[Ports]:
    if request.param == "memory":
        state = MemoryPolicyState()
        clusters = MemoryClusters(state)
        yield Ports(
            clusters,
            MemoryEntries(state),
            MemoryPolicyLog(state),
            lambda cluster_id, counter: clusters.put_legacy(cluster_id, counter=counter),
        )
        return
    env: AwsEnv = request.getfixturevalue("aws")
    adapters = Adapters(env.settings, dynamodb=env.dynamodb)

    def put_legacy(cluster_id: str, counter: int) -> None:
        env.dynamodb.put_item(
            TableName=env.settings.table("clusters"),
            Item={
                "cluster_id": {"S": cluster_id},
                "kind": {"S": "cluster"},
                "name": {"S": cluster_id},
                "created_at": {"S": "2026-01-01T00:00:00.000Z"},
                "policy_version": {"N": str(counter)},
                "settings": {"S": ClusterSettings().model_dump_json()},
                "settings_version": {"N": "0"},
            },
        )

    yield Ports(adapters.clusters, adapters.policy_entries, adapters.policy_log, put_legacy)


def entry(user: str, version: int, access: Access = Access.ALLOW) -> DeviceEntry:
    return device_entry(user, version, access)


def plan(ports: Ports, version: int, proposal: Proposal, cluster: str = "c-1") -> CommitPlan:
    devices, credentials = ports.entries.get_many(cluster, proposal.device_keys, proposal.users)
    settings: Any = None
    if proposal.settings is not None:
        found = ports.clusters.get_cluster(cluster)
        assert found is not None
        settings = (found.settings, found.settings_version)
    return plan_commit(version, proposal, Held(devices, credentials, settings))


def test_a_cluster_starts_at_version_zero_and_hands_versions_out(ports: Ports) -> None:
    created = ports.clusters.create_cluster("c-1", "hq", T0)
    assert created.watermark == initial_watermark(ClusterSettings())
    assert ports.clusters.get_cluster("c-1") == created
    assert [ports.clusters.next_version("c-1") for _ in range(3)] == [1, 2, 3]
    found = ports.clusters.get_cluster("c-1")
    assert found is not None and (found.policy_version, found.committed_version) == (3, 0)
    with pytest.raises(Conflict):
        ports.clusters.create_cluster("c-1", "again", T0)
    with pytest.raises(NotFound):
        ports.clusters.next_version("c-nope")
    assert ports.clusters.get_cluster("c-nope") is None


def test_a_commit_writes_entries_credentials_settings_and_its_record(ports: Ports) -> None:
    ports.clusters.create_cluster("c-1", "hq", T0)
    settings = ClusterSettings(test_mode=True)
    credential = UserCredential(user="bob", version=1, updated_at=T0)
    proposal = Proposal(devices=(entry("alice", 1),), credentials=(credential,), settings=settings)
    committed = plan(ports, 1, proposal)
    ports.log.commit("c-1", committed, T0)

    devices, credentials = ports.entries.get_many("c-1", [entry("alice", 1).key, "x"], ["bob"])
    assert devices == {entry("alice", 1).key: entry("alice", 1)}
    assert credentials == {"bob": credential}
    assert ports.entries.list_all("c-1") == ([entry("alice", 1)], [credential])
    assert ports.entries.get_device_entry("c-1", "alice", "dev1") == entry("alice", 1)
    assert ports.entries.get_credential("c-1", "bob") == credential
    cluster = ports.clusters.get_cluster("c-1")
    assert cluster is not None and (cluster.settings, cluster.settings_version) == (settings, 1)
    (record,) = ports.log.read("c-1", 0, 1)
    assert (record.version, record.state, record.changes) == (
        1,
        LogState.COMMITTED,
        committed.changes,
    )


def test_a_commit_swaps_only_what_it_read(ports: Ports) -> None:
    ports.clusters.create_cluster("c-1", "hq", T0)
    first = plan(ports, 1, Proposal(devices=(entry("alice", 1),)))
    stale = plan(ports, 2, Proposal(devices=(entry("alice", 2, Access.BLOCK),)))  # read: absent
    ports.log.commit("c-1", first, T0)
    with pytest.raises(CommitConflict):
        ports.log.commit("c-1", stale, T0)
    assert list(ports.log.read("c-1", 1, 2)) == []  # nothing of version 2 was written
    assert ports.entries.get_device_entry("c-1", "alice", "dev1") == entry("alice", 1)
    ports.log.commit("c-1", plan(ports, 2, Proposal(devices=(entry("alice", 2),))), T0)
    assert ports.entries.get_device_entry("c-1", "alice", "dev1") == entry("alice", 2)


def test_a_settings_commit_swaps_on_the_settings_version(ports: Ports) -> None:
    ports.clusters.create_cluster("c-1", "hq", T0)
    one = plan(ports, 1, Proposal(settings=ClusterSettings(test_mode=True)))
    two = plan(ports, 2, Proposal(settings=ClusterSettings(fail_mode="open")))  # read: v0
    ports.log.commit("c-1", one, T0)
    with pytest.raises(CommitConflict):
        ports.log.commit("c-1", two, T0)
    cluster = ports.clusters.get_cluster("c-1")
    assert cluster is not None and cluster.settings == ClusterSettings(test_mode=True)


def test_a_settled_version_refuses_a_commit_and_a_pending_one_accepts_it(ports: Ports) -> None:
    ports.clusters.create_cluster("c-1", "hq", T0)
    for _ in range(3):
        ports.clusters.next_version("c-1")
    assert ports.log.mark_pending("c-1", 1, T0) is True
    assert ports.log.mark_pending("c-1", 1, T0) is False
    ports.log.commit("c-1", plan(ports, 1, Proposal(devices=(entry("a", 1),))), T0)
    with pytest.raises(VersionFenced):  # committed already
        ports.log.commit("c-1", plan(ports, 1, Proposal()), T0)
    assert ports.log.mark_pending("c-1", 2, T0) is True
    assert ports.log.abandon("c-1", 2, T0, fence=True) is True
    with pytest.raises(VersionFenced):
        ports.log.commit("c-1", plan(ports, 2, Proposal(devices=(entry("b", 2),))), T0)
    assert ports.entries.get_device_entry("c-1", "b", "dev1") is None
    assert ports.log.abandon("c-1", 3, T0, fence=True) is False  # missing: no fence
    assert ports.log.abandon("c-1", 3, T0, fence=False) is True  # a writer gives it up
    assert ports.log.abandon("c-1", 1, T0, fence=False) is False  # committed stays
    assert [(r.version, r.state) for r in ports.log.read("c-1", 0, 3)] == [
        (1, LogState.COMMITTED),
        (2, LogState.ABANDONED),
        (3, LogState.ABANDONED),
    ]


def test_the_log_is_read_in_version_order_within_the_range(ports: Ports) -> None:
    ports.clusters.create_cluster("c-1", "hq", T0)
    ports.clusters.create_cluster("c-2", "branch", T0)
    for version in range(1, 251):  # more than one page
        ports.log.mark_pending("c-1", version, T0 + timedelta(seconds=version))
    ports.log.mark_pending("c-2", 5, T0)
    read = list(ports.log.read("c-1", 3, 240))
    assert [r.version for r in read] == list(range(4, 241))
    assert read[0].first_seen == T0 + timedelta(seconds=4)
    assert list(ports.log.read("c-1", 5, 5)) == []
    assert [r.version for r in ports.log.read("c-2", 0, 9)] == [5]


def test_the_watermark_moves_only_from_the_version_it_was_read_at(ports: Ports) -> None:
    ports.clusters.create_cluster("c-1", "hq", T0)
    ports.clusters.next_version("c-1")
    mark = Watermark(1, 77, ((0, 5), (1, 77)))
    assert ports.clusters.advance_watermark("c-1", 3, mark) is None
    moved = ports.clusters.advance_watermark("c-1", 0, mark)
    assert moved is not None and (moved.watermark, moved.policy_version) == (mark, 1)
    assert ports.clusters.get_cluster("c-1") == moved
    assert ports.clusters.advance_watermark("c-1", 0, Watermark(1, 1)) is None
    assert ports.clusters.advance_watermark("c-nope", 0, mark) is None


def test_an_item_from_before_committed_versions_reads_as_legacy_at_version_zero(
    ports: Ports,
) -> None:
    ports.put_legacy("c-old", 7)
    found = ports.clusters.get_cluster("c-old")
    assert found is not None and found.legacy and found.bootstrap is None
    assert (found.policy_version, found.committed_version) == (7, 0)
    assert ports.clusters.advance_watermark("c-old", 0, Watermark(7, 1)) is None  # never
    created = ports.clusters.create_cluster("c-new", "hq", T0)
    assert not created.legacy and created.bootstrap is None


def test_a_bootstrap_is_marked_once_with_the_counter_and_stored_once(ports: Ports) -> None:
    ports.put_legacy("c-old", 7)
    marked = ports.clusters.mark_bootstrap("c-old", T0)
    assert marked is not None and marked.bootstrap is not None
    assert (marked.bootstrap.counter, marked.bootstrap.at) == (7, T0)
    assert ports.clusters.get_cluster("c-old") == marked
    assert ports.clusters.mark_bootstrap("c-old", T0 + timedelta(seconds=1)) is None
    ports.clusters.next_version("c-old")
    # Again (a write without the log seen after the mark): only over the mark read.
    assert ports.clusters.mark_bootstrap("c-old", T0, replacing=6) is None
    again = ports.clusters.mark_bootstrap("c-old", T0 + timedelta(seconds=2), replacing=7)
    assert again is not None and again.bootstrap is not None
    assert (again.bootstrap.counter, again.bootstrap.at) == (8, T0 + timedelta(seconds=2))

    first = Watermark(8, 99, ((8, 99),))
    assert ports.clusters.bootstrap_watermark("c-old", 7, first) is None  # another mark
    stored = ports.clusters.bootstrap_watermark("c-old", 8, first)
    assert stored is not None and not stored.legacy and stored.bootstrap is None
    assert (stored.watermark, stored.policy_version) == (first, 8)
    assert ports.clusters.get_cluster("c-old") == stored
    assert ports.clusters.bootstrap_watermark("c-old", 8, first) is None  # once
    assert ports.clusters.mark_bootstrap("c-old", T0) is None  # not legacy any more
    ports.clusters.create_cluster("c-new", "hq", T0)
    assert ports.clusters.mark_bootstrap("c-new", T0) is None
    assert ports.clusters.mark_bootstrap("c-nope", T0) is None
    assert ports.clusters.bootstrap_watermark("c-nope", 0, first) is None
