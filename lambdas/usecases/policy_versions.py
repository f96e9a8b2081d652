"""Policy versions: how a change becomes a committed version, and how the cluster's
committed version W moves (the invariant every gateway relies on).

Theory of operation
-------------------
The invariant (``seg_contract.models``): *a node at applied version V holds, for every
key, an entry at least as new as the newest one whose version is <= V.* A node's V only
ever comes from the control plane (a snapshot's or a delta's version, or a push of
V + 1), so it is enough that the control plane never states a version before
everything up to it is written. That is what W is.

1. *Handing out.* A writer takes version v from the cluster's atomic counter
   (``policy_version``, an ``ADD``: no contention between writers).
2. *Committing.* It reads the keys it will change (consistently), plans the writes
   (``lambdas.domain.policy_commit``) and commits them in ONE transaction with the log
   record ``log(v) = committed, [changes]``: every entry write is a compare-and-swap on
   the version it read, the settings write on the settings version it read, and the log
   record is conditional on v not being settled yet (missing or pending). So either all
   of v is written, with its record, or nothing is. A CAS failure means a key moved:
   read again, retry under v. A key already at v or newer is stale for v and dropped
   (v still commits, possibly empty). A failed log condition means v was fenced as
   abandoned (below): take a new version and redo the whole evaluation, re-reading the
   inputs after taking it. A writer that fails otherwise gives v up (abandoned) at once.
3. *Advancing.* ``advance`` walks the log from W + 1 (``lambdas.domain.policy_log.walk``):
   committed and abandoned versions are passed, a missing one is marked pending with
   the time it was first seen, a pending one older than ``ABANDON_GRACE`` is fenced
   (pending -> abandoned, conditional, so a late commit of it fails), and the walk stops
   at the first unsettled one. W, the digest at W and the recent digests are then
   stored conditional on W being unchanged. Writers advance after committing; readers
   (snapshot, delta, keepalive) advance before reading, so a dead writer's hole is
   fenced within the grace and W moves on.

Why it holds. Entries of one key are written in increasing version order (CAS on the
version read), and a version's entries land atomically with its log record. When W is
stored, every version <= W is settled: committed (its entries are in the table, or a
newer entry of the same key is) or abandoned (it wrote nothing and never will). So a
snapshot that reads W first and the entries after holds, for every key, the newest entry
<= W or a newer one; a delta (N, W] reads the log records of those versions and the
current entries of every key they changed; and a version is pushed only after its
commit. None of them ever states a version whose changes are not written.

The digest. W's digest is kept incrementally: walking a committed version applies each
change's ``-old_term + new_term`` (``seg_contract.digest``). Because every change's old
term is the term of the entry it replaced (CAS), and versions are walked in order, the
digest at W equals ``policy_digest`` of every key's newest entry <= W plus the settings
at W. Keepalives compare a node's reported digest with it (anti-entropy).

A small timeline (one cluster, W = 4, counter = 4)::

    t0  writer A takes 5            counter 5; W 4 (5 is unsettled)
    t1  node fetches the snapshot   -> version 4: A's entry is not promised
    t2  A commits 5 (entry + log)   push of 5 to every node; W -> 5 (A advances)
    t3  the push is lost            node stays at 4
    t4  node's keepalive            pong version 5 > 4: node fetches the delta since 4
                                    -> log (4, 5] -> A's entry, version 5: converged
    t5  writer B takes 6, dies      counter 6; W 5
    t6  writer C takes 7, commits   push of 7 (node: a gap, stays at 5); C's advance
                                    marks 6 pending (first seen t6), W stays 5
    t6 + 90 s  a keepalive          6 fenced (abandoned), W -> 7; pong 7: delta (5, 7]

A cluster item from before this protocol has no W yet: ``advance`` bootstraps it first
(``policy_bootstrap``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from lambdas.domain.errors import CommitConflict, StorageError, VersionFenced
from lambdas.domain.policy_commit import CommitPlan, Held, Proposal, plan_commit
from lambdas.domain.policy_log import ABANDON_GRACE, walk
from lambdas.domain.records import ClusterRecord
from lambdas.ports import (
    ClusterStore,
    ConnectionPoster,
    ConnectionStore,
    PolicyEntryStore,
    PolicyLog,
)
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.policy_bootstrap import bootstrap
from lambdas.usecases.policy_signing import PolicySigning
from lambdas.usecases.push import PushReport, publish
from seg_contract import PushChange

logger = logging.getLogger(__name__)

MAX_CONFLICTS = 5  # CAS retries under one version (each re-reads what it replaces)
MAX_VERSIONS = 4  # versions one change may take (fenced, or stale for a read-modify-write)
_ADVANCE_ROUNDS = 3  # walks per advance (a fence lost to a late commit walks again)

Propose = Callable[[int], Proposal]


@dataclass(frozen=True)
class VersionStores:
    """Where a version is taken, committed, advanced and pushed from."""

    clusters: ClusterStore
    entries: PolicyEntryStore
    log: PolicyLog
    connections: ConnectionStore
    poster: ConnectionPoster
    signing: PolicySigning  # every push is signed (``lambdas.usecases.push``)


@dataclass(frozen=True)
class Committed:
    """A committed version: what it wrote, what it dropped as stale, how it was pushed."""

    cluster_id: str
    plan: CommitPlan
    pushes: PushReport = field(default_factory=PushReport)

    @property
    def version(self) -> int:
        return self.plan.version

    def message(self) -> PushChange:
        return PushChange(
            cluster_id=self.cluster_id,
            version=self.plan.version,
            devices=self.plan.written_devices,
            credentials=self.plan.written_credentials,
            settings=self.plan.written_settings,
        )


def read_held(cluster_id: str, proposal: Proposal, stores: VersionStores) -> Held:
    """What is stored now for the proposal's keys (consistent reads)."""
    devices, credentials = stores.entries.get_many(cluster_id, proposal.device_keys, proposal.users)
    if proposal.settings is None:
        return Held(devices, credentials)
    cluster = require_cluster(stores.clusters, cluster_id)
    return Held(devices, credentials, (cluster.settings, cluster.settings_version))


def commit_version(
    cluster_id: str, version: int, propose: Propose, *, stores: VersionStores, now: datetime
) -> CommitPlan:
    """Commit what ``propose(version)`` proposes under ``version``, retrying (with a
    fresh proposal and fresh reads) while a compare-and-swap fails. Raises
    ``VersionFenced`` (take a new version and redo the work)."""
    for _ in range(MAX_CONFLICTS):
        proposal = propose(version)
        plan = plan_commit(version, proposal, read_held(cluster_id, proposal, stores))
        try:
            stores.log.commit(cluster_id, plan, now)
        except CommitConflict:
            logger.info("commit of version %d in %s raced; retrying", version, cluster_id)
            continue
        return plan
    raise StorageError(f"policy version {version} of cluster {cluster_id} kept conflicting")


def write_version(
    cluster_id: str,
    propose: Propose,
    *,
    stores: VersionStores,
    now: datetime,
    version: int | None = None,
    retry_stale: bool = False,
) -> Committed:
    """Take a version (or use ``version``, taken by the caller before it read its
    inputs), commit what ``propose`` proposes for it, push it to every node and advance
    the cluster's committed version.

    ``propose(v)`` must read its inputs itself (it is called again after a conflict, and
    with a new version after a fence). ``retry_stale``: a read-modify-write (its proposal
    is derived from the stored value) is redone under a new version when a newer write
    made it stale, instead of being dropped."""
    for _ in range(MAX_VERSIONS):
        if version is None:
            version = stores.clusters.next_version(cluster_id)
        try:
            plan = commit_version(cluster_id, version, propose, stores=stores, now=now)
        except VersionFenced:
            logger.warning("version %d of %s was fenced; retaking", version, cluster_id)
            version = None
            continue
        except Exception:
            release(cluster_id, version, log=stores.log, now=now)
            raise
        committed = publish_version(cluster_id, plan, stores=stores, now=now)
        if retry_stale and plan.dropped:
            version = None
            continue
        return committed
    raise StorageError(f"could not commit a policy version of cluster {cluster_id}")


def publish_version(
    cluster_id: str, plan: CommitPlan, *, stores: VersionStores, now: datetime
) -> Committed:
    """After a commit: push the version (even an empty one: it moves nodes on) and
    advance W (best effort: any later reader advances too)."""
    committed = Committed(cluster_id, plan)
    report = publish(
        cluster_id,
        committed.message(),
        connections=stores.connections,
        poster=stores.poster,
        signing=stores.signing,
        now=now,
    )
    try:
        advance(
            cluster_id, clusters=stores.clusters, log=stores.log, now=now, entries=stores.entries
        )
    except StorageError:
        logger.warning("could not advance %s after version %d", cluster_id, plan.version)
    return replace(committed, pushes=report)


def release(cluster_id: str, version: int, *, log: PolicyLog, now: datetime) -> None:
    """Give up a version the writer will not commit, so W need not wait for the grace
    (best effort: the grace fences it anyway)."""
    try:
        log.abandon(cluster_id, version, now, fence=False)
    except StorageError:
        logger.warning("could not give up version %d of %s", version, cluster_id)


def advance(
    cluster_id: str,
    *,
    clusters: ClusterStore,
    log: PolicyLog,
    now: datetime,
    grace: timedelta = ABANDON_GRACE,
    entries: PolicyEntryStore | None = None,
) -> ClusterRecord:
    """Move the cluster's committed version over every settled version after it (see
    the module doc) and return the cluster as it is then. ``NotFound`` for an unknown
    cluster. Cheap when nothing is unsettled: one consistent read.

    A cluster item from before committed versions is bootstrapped first
    (``policy_bootstrap``; ``entries``: the store its first watermark is read from,
    None to only mark it); until then it stays at its placeholder version 0."""
    cluster = require_cluster(clusters, cluster_id)
    if cluster.legacy:
        cluster = bootstrap(
            cluster, clusters=clusters, log=log, entries=entries, now=now, grace=grace
        )
        if cluster.legacy:
            return cluster
    for _ in range(_ADVANCE_ROUNDS):
        current = cluster.watermark
        if cluster.policy_version <= current.version:
            return cluster
        records = log.read(cluster_id, current.version, cluster.policy_version)
        plan = walk(current, cluster.policy_version, records, now, grace)
        for version in plan.mark_pending:
            log.mark_pending(cluster_id, version, now)
        lost = [v for v in plan.fence if not log.abandon(cluster_id, v, now, fence=True)]
        if plan.fence:
            logger.warning("cluster %s: fenced abandoned versions %s", cluster_id, plan.fence)
        fenced = not set(lost) & set(plan.required_fences)
        if fenced and not plan.moves(current):
            return cluster
        # The cluster as written, not as read before the walk: its settings must be
        # at least as new as every version up to the new W.
        moved = (
            clusters.advance_watermark(cluster_id, current.version, plan.watermark)
            if fenced
            else None
        )
        if moved is not None:
            return moved
        # A fenced version was committed meanwhile, or another advancer moved W: again.
        cluster = require_cluster(clusters, cluster_id)
    return cluster
