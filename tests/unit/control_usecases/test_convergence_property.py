"""The invariant and convergence, as a property: random interleavings of writers (take
a version, commit it later or die holding it, or write at once), snapshot and delta
fetches, pushes lost, duplicated and reordered, keepalives, node restarts (keeping the
policy or starting empty), hand-edited node policies and the clock, all on the real use
cases over the in-memory fakes, with the gateway's real ``PolicyIndex`` as each node.

After every step, for every node at applied version V:
- every version up to V is settled in the log (committed or abandoned);
- for every key, the node holds an entry at least as new as the newest committed entry
  with version <= V, and every entry it holds was committed (a hand edit aside);
- its settings are at least as new as the newest committed settings <= V.
And the control plane's digest of every version it keeps one of (W and the recent ones)
equals ``policy_digest`` of every key's newest entry with version <= that version.
After a final anti-entropy round (dead writers fenced, keepalives, pongs answered),
every node's digest equals the control plane's and its decisions equal the control
plane's for every key.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lambdas.domain.policy_commit import Proposal
from lambdas.domain.policy_log import ABANDON_GRACE, SETTINGS_KEY, ChangeKind, LogState
from lambdas.usecases.policy_versions import write_version
from seg_contract import (
    Access,
    ClusterSettings,
    DeviceEntry,
    UserCredential,
    entry_key,
)
from seg_contract.digest import policy_digest, to_hex
from tests.support.policy import device_entry

from .world import CLUSTER, FakeControlPlane

USERS = ("u0", "u1", "u2", "u3")
CREDENTIAL_USERS = ("c0", "c1")
NODES = 2

# A change a writer proposes: ("device", user, access) | ("credential", user, enabled) |
# ("settings", unknown-device action).
change = st.one_of(
    st.tuples(st.just("device"), st.sampled_from(USERS), st.sampled_from(list(Access))),
    st.tuples(st.just("credential"), st.sampled_from(CREDENTIAL_USERS), st.booleans()),
    st.tuples(st.just("settings"), st.sampled_from(list(Access)), st.just(None)),
)


class Convergence(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.cp = FakeControlPlane()
        self.nodes = [self.cp.node(f"n{i}") for i in range(NODES)]
        for node in self.nodes:
            node.refresh()
        self.held: list[tuple[int, tuple[Any, ...]]] = []  # versions taken, not committed

    # --- writers --------------------------------------------------------------------

    def _propose(self, what: tuple[Any, ...]) -> Any:
        kind, subject, value = what
        now = self.cp.now

        def propose(version: int) -> Proposal:
            if kind == "device":
                return Proposal(devices=(device_entry(subject, version, value, at=now),))
            if kind == "credential":
                credential = UserCredential(
                    user=subject, enabled=value, version=version, updated_at=now
                )
                return Proposal(credentials=(credential,))
            return Proposal(settings=ClusterSettings(unknown_device_action=subject))

        return propose

    @rule(what=change)
    def take_version(self, what: tuple[Any, ...]) -> None:
        self.held.append((self.cp.clusters.next_version(CLUSTER), what))

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 100))
    def commit_held(self, pick: int) -> None:
        version, what = self.held.pop(pick % len(self.held))
        write_version(
            CLUSTER, self._propose(what), stores=self.cp.versions, now=self.cp.now, version=version
        )

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 100))
    def writer_dies(self, pick: int) -> None:
        self.held.pop(pick % len(self.held))

    @rule(what=change)
    def write_now(self, what: tuple[Any, ...]) -> None:
        write_version(CLUSTER, self._propose(what), stores=self.cp.versions, now=self.cp.now)

    @rule(seconds=st.sampled_from([1, 30, 61, ABANDON_GRACE.total_seconds() + 1]))
    def time_passes(self, seconds: float) -> None:
        self.cp.tick(seconds)

    # --- nodes and the wire ---------------------------------------------------------

    @rule(n=st.integers(0, NODES - 1))
    def refresh(self, n: int) -> None:
        self.nodes[n].refresh()

    @rule(n=st.integers(0, NODES - 1))
    def fetch_delta(self, n: int) -> None:
        self.nodes[n].sync()

    @rule(n=st.integers(0, NODES - 1))
    def keepalive(self, n: int) -> None:
        self.cp.keepalive(self.nodes[n])

    @rule(n=st.integers(0, NODES - 1), pick=st.integers(0, 100), how=st.sampled_from("dlxr"))
    def wire(self, n: int, pick: int, how: str) -> None:
        """Deliver the oldest (d), lose one (l), duplicate one (x) or deliver one out of
        order (r)."""
        inbox = self.cp.inbox(self.nodes[n])
        if not inbox:
            return
        index = 0 if how == "d" else pick % len(inbox)
        if how == "l":
            inbox.pop(index)
        elif how == "x":
            inbox.insert(index, inbox[index])
        else:
            self.nodes[n].receive(inbox.pop(index))

    @rule(n=st.integers(0, NODES - 1), keep=st.booleans())
    def restart(self, n: int, keep: bool) -> None:
        old = self.nodes[n]
        self.cp.inbox(old).clear()  # what was in flight is gone
        node = self.cp.node(old.node_id)
        if keep:
            node.index = old.index  # the last-known-good policy from disk
        else:
            node.refresh()
        self.nodes[n] = node

    @rule(n=st.integers(0, NODES - 1))
    def hand_edit(self, n: int) -> None:
        """A node's policy file edited by hand: a decision flipped, versions kept."""
        node = self.nodes[n]
        snapshot = node.index.to_snapshot()
        if not snapshot.devices:
            return
        first, *rest = snapshot.devices
        flipped = Access.ALLOW if first.access is not Access.ALLOW else Access.BLOCK
        edited = (first.model_copy(update={"access": flipped}), *rest)
        node.index = type(node.index).from_snapshot(
            snapshot.model_copy(update={"devices": edited}), node.index.confirmed_at
        )

    # --- the invariant --------------------------------------------------------------

    def _committed(self) -> list[tuple[int, ChangeKind, str]]:
        return [
            (record.version, change.kind, change.key)
            for record in self.cp.log.read(CLUSTER, 0, 10**9)
            if record.state is LogState.COMMITTED
            for change in record.changes
        ]

    @invariant()
    def every_node_holds_everything_up_to_its_version(self) -> None:
        if not hasattr(self, "cp"):
            return
        records = {r.version: r.state for r in self.cp.log.read(CLUSTER, 0, 10**9)}
        committed = self._committed()
        for node in self.nodes:
            applied = node.index.version
            unsettled = [
                v
                for v in range(1, applied + 1)
                if records.get(v) not in (LogState.COMMITTED, LogState.ABANDONED)
            ]
            assert unsettled == [], (node.node_id, applied)
            held = {e.key: e.version for e in node.index.devices()}
            held |= {c.user: c.version for c in node.index.credentials()}
            held[SETTINGS_KEY] = node.settings_version()
            newest: dict[str, int] = {}
            for version, _kind, key in committed:
                if version <= applied:
                    newest[key] = max(newest.get(key, 0), version)
            for key, version in newest.items():
                assert held.get(key, 0) >= version, (node.node_id, key, version, applied)
            written = {(v, k) for v, _kind, k in committed}
            for key, version in held.items():
                if key != SETTINGS_KEY or version:
                    assert (version, key) in written, (node.node_id, key, version)

    @invariant()
    def the_kept_digests_are_the_digests_of_the_policy_at_their_versions(self) -> None:
        if not hasattr(self, "cp"):
            return
        cluster = self.cp.clusters.get_cluster(CLUSTER)
        assert cluster is not None
        for version, digest in cluster.watermark.recent:
            assert digest == self._digest_as_of(version), version
        assert cluster.watermark.digest_at(cluster.committed_version) == cluster.watermark.digest

    def _digest_as_of(self, version: int) -> int:
        """``policy_digest`` of the policy as of ``version``, rebuilt from everything
        ever committed (not from the log's terms)."""
        devices: dict[str, DeviceEntry] = {}
        credentials: dict[str, UserCredential] = {}
        settings, settings_version = ClusterSettings(), 0
        for _, item in self.cp.state.history:
            if isinstance(item, DeviceEntry):
                held_entry = devices.get(item.key)
                if item.version <= version and (
                    held_entry is None or item.version > held_entry.version
                ):
                    devices[item.key] = item
            elif isinstance(item, UserCredential):
                held = credentials.get(item.user)
                if item.version <= version and (held is None or item.version > held.version):
                    credentials[item.user] = item
            elif settings_version < item[1] <= version:
                settings, settings_version = item
        return policy_digest(devices.values(), credentials.values(), settings, settings_version)

    # --- the end: one anti-entropy round --------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "cp"):
            return
        cp = self.cp
        cluster = cp.clusters.get_cluster(CLUSTER)
        assert cluster is not None
        for _ in range(2):  # dead writers' versions: marked, then fenced after the grace
            if cp.advance() == cluster.policy_version:
                break
            cp.tick(ABANDON_GRACE.total_seconds() + 1)
        cluster = cp.clusters.get_cluster(CLUSTER)
        assert cluster is not None and cluster.committed_version == cluster.policy_version
        devices, credentials = cp.entries.list_all(CLUSTER)
        truth = policy_digest(devices, credentials, cluster.settings, cluster.settings_version)
        assert truth == cluster.watermark.digest
        for node in self.nodes:
            cp.inbox(node).clear()
            for _ in range(3):  # catch up; report the digest; replace if diverged
                cp.keepalive(node)
                cp.deliver_all(node)
            assert cp.keepalive(node).digest_check == "in_sync", node.node_id
            assert node.digest() == to_hex(truth)
            assert node.decisions() == {entry_key(d.user, d.device_id): d.access for d in devices}


Convergence.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_convergence = Convergence.TestCase
