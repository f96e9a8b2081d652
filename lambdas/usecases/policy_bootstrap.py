"""Bootstrap: the first committed watermark of a cluster created before committed
versions existed, so that old clusters converge and get digests without being
registered again.

Such a cluster item has a counter (``policy_version``) but no ``committed_version``,
``digest`` or ``recent_digests``, and its versions have no log records; its entries
carry versions up to the counter. ``policy_versions.advance`` hands it here whenever it
meets one (every snapshot, delta, commit and keepalive advances):

1. *Mark.* The first advance to meet it records the mark: the counter's value C and the
   time, in one conditional write (only while no mark and no watermark exist), so that
   concurrent advancers agree on one C. Nothing else changes: the cluster still states
   version 0 (its placeholder W), which is true of any policy.
2. *Wait.* Versions up to C were handed out before the mark, some perhaps to writers
   still at work, and writers of the old code never log and cannot be fenced. So the
   bootstrap waits ``ABANDON_GRACE`` (90 s, three times the longest writer timeout)
   after the mark: then every version <= C is final. This is the one place where safety
   rests on the writers' time limit; the conditional fences of the log protect every
   version after C, as for any cluster.
3. *Initialise.* The next advance that can read entries (snapshot, delta or commit; a
   keepalive only marks) reads every entry and credential of the cluster consistently,
   then the log records after C, and computes the digest of the policy as of C key by
   key (``domain.policy_bootstrap.first_watermark``: entries above C were replaced by
   logged commits, whose earliest old term per key is the value at C). W = C, the
   digest and ``recent_digests = [(C, digest)]`` are stored conditional on the item
   still having no watermark and the same mark: concurrent bootstraps compute the same
   value and exactly one write lands; the others read it back.
4. From then on the cluster is like any other: ``advance`` walks the log from C (new
   versions after the mark are logged), and a node's delta from below C is 410 (no
   log there), so it takes a snapshot.

An entry above C with no logged change means a writer of the old code wrote after the
mark (an upgrade still rolling out): the value at C is lost, so the bootstrap begins
again with a new mark (and a new wait).

Timeline (legacy counter 57; nodes still at 57 from the old protocol)::

    t0        a keepalive meets the item      mark C = 57 at t0; pong says version 0
    t0 + 30 s the next pong still says 0      the node holds 57 > 0 a whole report
                                              interval: it replaces its policy with a
                                              snapshot (version 0, every entry)
    t1        a writer commits 58 (logged)    W stays 0 (the item is not bootstrapped)
    t0 + 90 s a snapshot, delta or commit     entries read, log (57, 58] read: W = 57
                                              with the digest as of 57; the walk moves
                                              W to 58; pong 58: the node's delta from 0
                                              is 410, its snapshot holds 58: in sync
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from lambdas.domain.policy_bootstrap import first_watermark
from lambdas.domain.records import ClusterRecord
from lambdas.ports import ClusterStore, PolicyEntryStore, PolicyLog
from lambdas.usecases.cluster_lookup import require_cluster

logger = logging.getLogger(__name__)


def bootstrap(
    cluster: ClusterRecord,
    *,
    clusters: ClusterStore,
    log: PolicyLog,
    entries: PolicyEntryStore | None,
    now: datetime,
    grace: timedelta,
) -> ClusterRecord:
    """One step of a legacy cluster's bootstrap (see the module doc); return the
    cluster as it is then (``legacy`` until its first watermark is stored).
    ``entries`` None: mark only (the caller cannot read entries)."""
    cluster_id = cluster.cluster_id
    mark = cluster.bootstrap
    if mark is None:
        marked = clusters.mark_bootstrap(cluster_id, now)
        if marked is not None:
            logger.warning(
                "cluster %s has no committed version (created before committed versions): "
                "bootstrapping it at version %d in %.0f s",
                cluster_id,
                marked.bootstrap.counter if marked.bootstrap else -1,
                grace.total_seconds(),
            )
            return marked
        return require_cluster(clusters, cluster_id)  # another advancer marked it
    if entries is None or not mark.due(now, grace):
        return cluster
    devices, credentials = entries.list_all(cluster_id)
    newest = max(
        [mark.counter, cluster.settings_version]
        + [e.version for e in devices]
        + [c.version for c in credentials]
    )
    watermark = first_watermark(
        mark.counter,
        devices=devices,
        credentials=credentials,
        settings=cluster.settings,
        settings_version=cluster.settings_version,
        records=log.read(cluster_id, mark.counter, newest),
    )
    if watermark is None:
        logger.warning(
            "cluster %s: an entry newer than version %d was written without the log (code "
            "from before committed versions still running?); bootstrapping again",
            cluster_id,
            mark.counter,
        )
        again = clusters.mark_bootstrap(cluster_id, now, replacing=mark.counter)
        return again if again is not None else require_cluster(clusters, cluster_id)
    stored = clusters.bootstrap_watermark(cluster_id, mark.counter, watermark)
    if stored is None:
        return require_cluster(clusters, cluster_id)  # another bootstrap stored it
    logger.warning("cluster %s bootstrapped: committed version %d", cluster_id, watermark.version)
    return stored
