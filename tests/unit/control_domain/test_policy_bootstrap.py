"""The first watermark of a cluster from before committed versions: the digest of its
policy as of the mark's counter C, from the entries as they are now and the log after
C, whatever was committed after the mark."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.domain.policy_bootstrap import BootstrapMark, first_watermark
from lambdas.domain.policy_commit import Held, Proposal, plan_commit
from lambdas.domain.policy_log import ABANDON_GRACE, LogRecord, LogState
from seg_contract import Access, ClusterSettings, DeviceEntry, UserCredential
from seg_contract.digest import policy_digest
from tests.support.policy import device_entry

from .conftest import NOW

USERS = ("u0", "u1", "u2", "u3", "u4")


class Cluster:
    """A cluster's stored state (entries, credentials, settings) and its log."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceEntry] = {}
        self.credentials: dict[str, UserCredential] = {}
        self.settings = (ClusterSettings(), 0)
        self.log: list[LogRecord] = []

    def legacy_write(self, version: int, user: str, access: Access) -> None:
        """What code from before committed versions did: the entry, no log record."""
        entry = device_entry(user, version, access)
        self.devices[entry.key] = entry

    def legacy_settings(self, version: int, action: Access) -> None:
        self.settings = (ClusterSettings(unknown_device_action=action), version)

    def commit(self, version: int, proposal: Proposal) -> None:
        """A committed version: what ``PolicyLog.commit`` writes."""
        plan = plan_commit(
            version,
            proposal,
            Held(dict(self.devices), dict(self.credentials), self.settings),
        )
        for entry, _ in plan.devices:
            self.devices[entry.key] = entry
        for credential, _ in plan.credentials:
            self.credentials[credential.user] = credential
        if plan.settings is not None:
            self.settings = (plan.settings[0], version)
        self.log.append(LogRecord(version, LogState.COMMITTED, plan.changes))

    def digest(self) -> int:
        return policy_digest(self.devices.values(), self.credentials.values(), *self.settings)

    def first(self, counter: int) -> int | None:
        found = first_watermark(
            counter,
            devices=self.devices.values(),
            credentials=self.credentials.values(),
            settings=self.settings[0],
            settings_version=self.settings[1],
            records=self.log,
        )
        if found is None:
            return None
        assert found.version == counter and found.recent == ((counter, found.digest),)
        return found.digest


def test_without_writes_after_the_mark_it_is_the_digest_of_what_is_stored() -> None:
    cluster = Cluster()
    cluster.legacy_write(1, "u0", Access.BLOCK)
    cluster.legacy_settings(2, Access.ALLOW)
    cluster.legacy_write(3, "u1", Access.ALLOW)
    cluster.legacy_write(4, "u0", Access.ALLOW)
    assert cluster.first(4) == cluster.digest()
    assert cluster.first(7) == cluster.digest()  # versions 5..7 were given up


def test_commits_after_the_mark_are_undone_key_by_key() -> None:
    cluster = Cluster()
    cluster.legacy_write(1, "u0", Access.BLOCK)
    cluster.legacy_settings(2, Access.ALLOW)
    at_mark = cluster.digest()
    cluster.commit(3, Proposal(devices=(device_entry("u0", 3, Access.ALLOW),)))
    cluster.commit(4, Proposal(devices=(device_entry("u9", 4),)))  # a new key
    cluster.commit(5, Proposal(settings=ClusterSettings(test_mode=True)))
    cluster.commit(6, Proposal(devices=(device_entry("u0", 6, Access.QUARANTINE),)))
    cluster.commit(7, Proposal(credentials=(UserCredential(user="c0", version=7, updated_at=NOW),)))
    assert cluster.first(2) == at_mark


def test_an_entry_written_after_the_mark_without_the_log_leaves_no_watermark() -> None:
    cluster = Cluster()
    cluster.legacy_write(1, "u0", Access.BLOCK)
    cluster.legacy_write(3, "u1", Access.BLOCK)  # an old writer, still running
    assert cluster.first(2) is None
    cluster.legacy_settings(4, Access.ALLOW)
    assert cluster.first(3) is None


def test_abandoned_and_pending_records_change_nothing() -> None:
    cluster = Cluster()
    cluster.legacy_write(1, "u0", Access.BLOCK)
    cluster.log += [LogRecord(2, LogState.ABANDONED), LogRecord(3, LogState.PENDING)]
    assert cluster.first(1) == cluster.digest()


def test_the_mark_is_due_after_the_grace() -> None:
    mark = BootstrapMark(counter=5, at=NOW)
    assert not mark.due(NOW + ABANDON_GRACE - timedelta(seconds=1), ABANDON_GRACE)
    assert mark.due(NOW + ABANDON_GRACE, ABANDON_GRACE)


# A change: ("device", user, access) | ("credential", user, enabled) | ("settings", action).
change = st.one_of(
    st.tuples(st.just("device"), st.sampled_from(USERS), st.sampled_from(list(Access))),
    st.tuples(st.just("credential"), st.sampled_from(USERS), st.booleans()),
    st.tuples(st.just("settings"), st.sampled_from(list(Access)), st.just(None)),
)


def _proposal(version: int, what: tuple[object, ...]) -> Proposal:
    kind, subject, value = what
    if kind == "device":
        assert isinstance(subject, str) and isinstance(value, Access)
        return Proposal(devices=(device_entry(subject, version, value),))
    if kind == "credential":
        assert isinstance(subject, str) and isinstance(value, bool)
        credential = UserCredential(user=subject, enabled=value, version=version, updated_at=NOW)
        return Proposal(credentials=(credential,))
    assert isinstance(subject, Access)
    return Proposal(settings=ClusterSettings(unknown_device_action=subject))


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(
        st.tuples(st.sampled_from(USERS), st.sampled_from(list(Access)), st.booleans()),
        max_size=12,
    ),
    gap=st.integers(min_value=0, max_value=3),
    after=st.lists(change, max_size=12),
    shuffled=st.randoms(use_true_random=False),
)
def test_the_first_digest_is_the_digest_of_the_policy_as_of_the_counter(
    before: list[tuple[str, Access, bool]],
    gap: int,
    after: list[tuple[object, ...]],
    shuffled: object,
) -> None:
    cluster = Cluster()
    version = 0
    for user, access, is_settings in before:  # the old code: no log
        version += 1
        if is_settings:
            cluster.legacy_settings(version, access)
        else:
            cluster.legacy_write(version, user, access)
    counter = version + gap  # versions handed out and given up before the mark
    expected = cluster.digest()
    for offset, what in enumerate(after, start=1):
        cluster.commit(counter + offset, _proposal(counter + offset, what))
    shuffled.shuffle(cluster.log)  # type: ignore[attr-defined]  # (a Random)
    assert cluster.first(counter) == expected
