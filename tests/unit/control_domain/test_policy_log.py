"""The pure parts of the policy-version protocol: the watermark walk over the log (with
its digest arithmetic), the digest verdict, the delta checks and the commit plan."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lambdas.domain.policy_commit import Held, Proposal, plan_commit
from lambdas.domain.policy_log import (
    ABANDON_GRACE,
    LOOKAHEAD,
    RECENT_DIGESTS,
    SETTINGS_KEY,
    Change,
    ChangeKind,
    DigestVerdict,
    LogRecord,
    LogState,
    Watermark,
    check_digest,
    initial_watermark,
    walk,
)
from lambdas.domain.versioning import (
    MAX_DELTA_SPAN,
    DeltaVerdict,
    check_coverage,
    check_delta,
)
from seg_contract import Access, ClusterSettings, DeviceEntry, UserCredential
from seg_contract.digest import MODULUS, credential_term, entry_term, settings_term
from tests.support.policy import device_entry

from .conftest import NOW

C, A, P = LogState.COMMITTED, LogState.ABANDONED, LogState.PENDING
OLD = NOW - ABANDON_GRACE - timedelta(seconds=1)  # a pending record past the grace
YOUNG = NOW - timedelta(seconds=5)
START = Watermark(4, 1000, ((3, 900), (4, 1000)))


def committed(version: int, *terms: tuple[int | None, int]) -> LogRecord:
    changes = tuple(Change(ChangeKind.DEVICE, f"k{i}", o, n) for i, (o, n) in enumerate(terms))
    return LogRecord(version, C, changes)


@pytest.mark.parametrize(
    ("records", "counter", "version", "digest", "fence", "mark"),
    [
        pytest.param([], 4, 4, 1000, (), (), id="nothing handed out"),
        pytest.param([committed(5, (None, 7))], 5, 5, 1007, (), (), id="committed: +new"),
        pytest.param(
            [committed(5, (100, 30)), committed(6, (None, 1), (30, 40))],
            6,
            6,
            1000 - 100 + 30 + 1 - 30 + 40,
            (),
            (),
            id="committed: -old +new, in order",
        ),
        pytest.param(
            [LogRecord(5, A), committed(6, (None, 5))], 6, 6, 1005, (), (), id="abandoned"
        ),
        pytest.param([committed(6, (None, 5))], 6, 4, 1000, (), (5,), id="missing: mark, stop"),
        pytest.param(
            [committed(5, (None, 5))], 7, 5, 1005, (), (6, 7), id="every missing one is marked"
        ),
        pytest.param(
            [LogRecord(5, P, first_seen=YOUNG), committed(6, (None, 5))],
            6,
            4,
            1000,
            (),
            (),
            id="pending, young: stop",
        ),
        pytest.param(
            [LogRecord(5, P, first_seen=OLD), committed(6, (None, 5))],
            6,
            6,
            1005,
            (5,),
            (),
            id="pending, old: fence, go on",
        ),
        pytest.param(
            [LogRecord(5, P, first_seen=OLD), LogRecord(6, P, first_seen=YOUNG)],
            6,
            5,
            1000,
            (5,),
            (),
            id="fence one, stop at the next",
        ),
        pytest.param(
            [
                LogRecord(5, P, first_seen=YOUNG),
                LogRecord(7, P, first_seen=OLD),
                committed(8, (None, 5)),
            ],
            9,
            4,
            1000,
            (7,),
            (6, 9),
            id="past the stop: fenced and marked, W stays",
        ),
        pytest.param(
            [LogRecord(5, P, first_seen=NOW + timedelta(minutes=5))],
            5,
            4,
            1000,
            (),
            (),
            id="pending seen in the future (skew): stop",
        ),
        pytest.param(
            [LogRecord(3, A), committed(5, (None, 5))], 5, 5, 1005, (), (), id="stray below W"
        ),
    ],
)
def test_the_watermark_walk(
    records: list[LogRecord],
    counter: int,
    version: int,
    digest: int,
    fence: tuple[int, ...],
    mark: tuple[int, ...],
) -> None:
    plan = walk(START, counter, records, NOW)
    assert plan.watermark.version == version
    assert plan.watermark.digest == digest % MODULUS
    assert plan.fence == fence
    assert plan.mark_pending == mark
    assert plan.moves(START) is (version > START.version)
    assert plan.watermark.recent[-1] == (version, digest % MODULUS)


def test_the_walk_keeps_every_passed_versions_digest_and_only_the_newest() -> None:
    records = [committed(v, (None, 1)) for v in range(5, 5 + RECENT_DIGESTS + 3)]
    plan = walk(START, records[-1].version, records, NOW)
    recent = plan.watermark.recent
    assert len(recent) == RECENT_DIGESTS
    assert recent[-1] == (plan.watermark.version, plan.watermark.digest)
    assert [v for v, _ in recent] == list(range(recent[0][0], plan.watermark.version + 1))
    assert all(d == 1000 + v - 4 for v, d in recent)


def test_the_walk_wraps_the_digest_modulo_2_128() -> None:
    top = Watermark(0, MODULUS - 1, ((0, MODULUS - 1),))
    plan = walk(top, 1, [committed(1, (None, 5))], NOW)
    assert plan.watermark.digest == 4
    back = walk(plan.watermark, 2, [committed(2, (5, 0))], NOW)
    assert back.watermark.digest == MODULUS - 1


def test_the_walk_reads_no_further_than_its_lookahead_past_the_stop() -> None:
    consumed: list[int] = []
    stop = 6

    def records():  # type: ignore[no-untyped-def]
        yield from consume([committed(5, (None, 1)), LogRecord(stop, P, first_seen=YOUNG)])
        yield from consume(LogRecord(v, A) for v in range(stop + 1, stop + LOOKAHEAD + 1))
        raise AssertionError("read past the lookahead")

    def consume(found):  # type: ignore[no-untyped-def]
        for record in found:
            consumed.append(record.version)
            yield record

    plan = walk(START, 10_000, records(), NOW)
    assert (plan.watermark.version, plan.mark_pending) == (5, ())
    assert consumed == list(range(5, stop + LOOKAHEAD + 1))


def test_a_new_clusters_watermark_is_the_digest_of_its_settings() -> None:
    mark = initial_watermark(ClusterSettings())
    assert (mark.version, mark.digest) == (0, settings_term(ClusterSettings(), 0))
    assert mark.digest_at(0) == mark.digest


@pytest.mark.parametrize(
    ("reported", "version", "verdict"),
    [
        ("", 4, DigestVerdict.UNCHECKED),
        (f"{1000:032x}", 4, DigestVerdict.IN_SYNC),
        (f"{900:032x}", 3, DigestVerdict.IN_SYNC),
        (f"{901:032x}", 3, DigestVerdict.DIVERGED),
        (f"{1000:032x}", 2, DigestVerdict.UNCHECKED),  # not kept
        (f"{1000:032x}", 9, DigestVerdict.UNCHECKED),  # ahead of W
    ],
)
def test_the_digest_verdict(reported: str, version: int, verdict: DigestVerdict) -> None:
    assert check_digest(reported, version, START) is verdict


@pytest.mark.parametrize(
    ("since", "committed_version", "counter", "verdict"),
    [
        (0, 0, 0, DeltaVerdict.CURRENT),
        (3, 9, 9, DeltaVerdict.CHANGES),
        (9, 9, 12, DeltaVerdict.CURRENT),
        (11, 9, 12, DeltaVerdict.CURRENT),  # ahead of W: pushes of committed versions
        (12, 9, 12, DeltaVerdict.CURRENT),
        (13, 9, 12, DeltaVerdict.AHEAD),  # never handed out
        (0, MAX_DELTA_SPAN, MAX_DELTA_SPAN, DeltaVerdict.CHANGES),
        (0, MAX_DELTA_SPAN + 1, MAX_DELTA_SPAN + 1, DeltaVerdict.TOO_FAR),
    ],
)
def test_delta_availability(
    since: int, committed_version: int, counter: int, verdict: DeltaVerdict
) -> None:
    check = check_delta(since, committed=committed_version, counter=counter)
    assert check.verdict is verdict
    assert check.available is (verdict in (DeltaVerdict.CHANGES, DeltaVerdict.CURRENT))
    assert ("full snapshot" in check.detail) is not check.available


@pytest.mark.parametrize(
    ("versions", "available"),
    [
        ([4, 5, 6], True),
        ([6, 5, 4], True),
        ([5, 6], False),  # 4 expired
        ([4, 6], False),
        ([4, 5], False),
        ([], False),
    ],
)
def test_delta_needs_a_record_of_every_version_in_range(
    versions: list[int], available: bool
) -> None:
    check = check_coverage(3, 6, versions)
    assert check.available is available
    if not available:
        assert check.detail == "delta since 3 is no longer available; fetch the full snapshot"


def test_negative_since_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="since"):
        check_delta(-1, committed=0, counter=0)


def _entry(user: str, version: int, access: Access = Access.ALLOW) -> DeviceEntry:
    return device_entry(user, version, access, at=NOW)


def _credential(user: str, version: int) -> UserCredential:
    return UserCredential(user=user, version=version, updated_at=NOW)


def test_a_plan_swaps_what_it_read_and_drops_what_is_newer() -> None:
    held_entry, newer = _entry("a", 3), _entry("b", 9)
    settings = ClusterSettings(test_mode=True)
    proposal = Proposal(
        devices=(_entry("a", 7, Access.BLOCK), _entry("b", 7), _entry("c", 7)),
        credentials=(_credential("a", 7),),
        settings=settings,
    )
    held = Held(
        devices={held_entry.key: held_entry, newer.key: newer},
        credentials={},
        settings=(ClusterSettings(), 2),
    )
    plan = plan_commit(7, proposal, held)
    assert [(e.user, expected) for e, expected in plan.devices] == [("a", 3), ("c", None)]
    assert [(c.user, expected) for c, expected in plan.credentials] == [("a", None)]
    assert plan.settings == (settings, 2)
    assert plan.dropped == (newer.key,)
    assert plan.changes == (
        Change(
            ChangeKind.DEVICE,
            held_entry.key,
            entry_term(held_entry),
            entry_term(proposal.devices[0]),
        ),
        Change(ChangeKind.DEVICE, proposal.devices[2].key, None, entry_term(proposal.devices[2])),
        Change(ChangeKind.CREDENTIAL, "a", None, credential_term(proposal.credentials[0])),
        Change(
            ChangeKind.SETTINGS,
            SETTINGS_KEY,
            settings_term(ClusterSettings(), 2),
            settings_term(settings, 7),
        ),
    )


def test_settings_written_by_a_newer_version_are_not_replaced() -> None:
    plan = plan_commit(
        5, Proposal(settings=ClusterSettings()), Held({}, {}, (ClusterSettings(), 6))
    )
    assert (plan.settings, plan.changes, plan.dropped) == (None, (), (SETTINGS_KEY,))


@pytest.mark.parametrize(
    ("proposal", "message"),
    [
        (Proposal(devices=(_entry("a", 6),)), "carry the version 7"),
        (Proposal(devices=(_entry("a", 7), _entry("a", 7))), "at most once"),
        (Proposal(devices=tuple(_entry(f"u{i}", 7) for i in range(100))), "at most 99"),
        (Proposal(settings=ClusterSettings()), "stored settings"),
    ],
)
def test_a_malformed_proposal_is_a_programming_error(proposal: Proposal, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_commit(7, proposal, Held({}, {}))
