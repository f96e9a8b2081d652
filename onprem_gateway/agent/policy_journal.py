"""The node's last-known-good policy: a journal of the signed input it applied, as
received, verified again and replayed at every start.

Why a journal and not a saved policy: only what the control plane signed can be trusted
after a restart, and the node's merged state (a snapshot plus the pushes and deltas
applied since) was never signed as a whole. So the node keeps the signed records that
produced it, in the order it applied them (``persist.JournalFile`` has the file format):

1. the signed snapshot it last took (the *base*);
2. then every signed delta and push (``change``) it applied since;
3. then signed confirmations (a 304's ``confirm``, or a pong) as they moved its
   freshness (only the newest one is kept when the file is compacted).

At start (``load``) each record is verified again with the keys the node trusts
(``live=False``: age is the fail mode's business, not a reason to refuse) and applied
in order through the same ``PolicyStore`` code as when it arrived. Freshness is the
newest signed issue time of a record that vouched for the state replayed so far (a
confirmation counts only if it names the version reached: records missing in between
leave the node with the older freshness, never a newer one). Nothing in the file is
trusted for time or content without a signature. A record that does not verify, a file
that is not a journal, records that do not apply in order: the file is moved aside,
``problem`` says why (``/readyz``), the refusal is counted, and the node starts without
a policy, so its fail mode decides (missing policy: every request is blocked).

Size: a new base resets the journal, keeping only the pushes and deltas that brought
something newer than it (so the replay reproduces what ``apply_snapshot`` keeps); a
replacement resets it to the replacing snapshot alone. When the part after the base
grows beyond the base itself, ``wants_snapshot`` asks the next refresh for a full
snapshot instead of a 304, which resets it. Superseded confirmations are dropped by an
occasional rewrite that copies the base from the old file.

Air-gapped nodes: ``load_policy_file`` reads an operator's policy file: a signed
journal (a connected node's ``policy.journal``, or one written by ``seg-gateway
fetch-policy``), verified like the journal, whose freshness is its newest signed issue
time; or, only with ``allow_unsigned_policy_file``, a plain ``PolicySnapshot`` JSON,
whose freshness is the time it was read (the operator vouches for it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from onprem_gateway.agent.persist import LEGACY_FILE, JournalFile, decode_records, move_aside
from onprem_gateway.agent.policy_store import PolicyOp, PolicyStore
from onprem_gateway.agent.policy_trust import PolicyRefused, PolicyTrust, issued_s
from onprem_gateway.core.policy_index import PolicyIndex, PolicyMismatchError
from seg_contract import PolicyDelta, PolicySnapshot
from seg_contract.signing import (
    Kind,
    RejectReason,
    SignatureRejected,
    SignedPayload,
    Statement,
    encode_record,
)

log = logging.getLogger(__name__)

MAX_CONFIRMS = 256  # superseded confirmations kept before a compaction drops them
MIN_TAIL_BYTES = 4 * 1024 * 1024  # the part after the base may grow this large at least
SIGNED_PREFIX = b'{"format":"seg-signed"'


class PolicyFileError(ValueError):
    """A policy file given on the command line that cannot be used (why: the message)."""


@dataclass(frozen=True)
class Record:
    """One signed record of the journal."""

    statement: Statement
    size: int  # bytes on disk
    newest: int  # the newest version it brings (what a new base must not lose)
    signed: SignedPayload | None  # None: only on disk (a base already written)

    @property
    def kind(self) -> Kind:
        return self.statement.kind


def _newest_of_delta(delta: PolicyDelta) -> int:
    versions = [delta.version, delta.settings_version]
    versions += [e.version for e in delta.devices] + [c.version for c in delta.credentials]
    return max(versions)


def _record(signed: SignedPayload, statement: Statement, newest: int) -> Record:
    return Record(statement, len(encode_record(signed)), newest, signed)


def replay(
    signed_records: Sequence[SignedPayload], trust: PolicyTrust
) -> tuple[PolicyIndex, list[Record]]:
    """Verify and apply stored records in order (see the module doc); the policy they
    make and the records with what compaction needs. ``SignatureRejected`` when a
    record does not verify or the records do not apply in order."""
    if not signed_records:
        raise SignatureRejected(RejectReason.MALFORMED, "no records")
    store = PolicyStore()
    records: list[Record] = []
    for n, signed in enumerate(signed_records, start=1):
        kind = signed.statement().kind
        index = store.current()
        if (n == 1) != (kind is Kind.SNAPSHOT):
            raise SignatureRejected(
                RejectReason.MALFORMED, f"record {n}: a journal has one snapshot, its first record"
            )
        try:
            if kind is Kind.SNAPSHOT:
                snapshot, verified = trust.snapshot(signed, live=False)
                store.apply_snapshot(snapshot, issued_s(verified))
                newest = snapshot.version
            elif kind is Kind.DELTA:
                delta, verified = trust.delta(signed, index, since=None, live=False)
                newest = _newest_of_delta(delta)
                if verified.apply:
                    store.apply_delta(delta, issued_s(verified))
            elif kind in (Kind.CHANGE, Kind.PONG):
                message, verified = trust.push_payload(signed, index, live=False)
                newest = verified.statement.version
                if kind is Kind.CHANGE and verified.apply:
                    store.apply_push(message)
            elif kind is Kind.CONFIRM:
                verified = trust.confirmation(signed, index, asked=None, live=False)
                newest = verified.statement.version
            else:
                raise SignatureRejected(
                    RejectReason.WRONG_KIND, f"record {n}: a {kind.value} has no place here"
                )
        except PolicyMismatchError as exc:
            raise SignatureRejected(
                RejectReason.MALFORMED, f"record {n} does not apply in order: {exc}"
            ) from None
        vouches = kind in (Kind.CONFIRM, Kind.PONG)
        if vouches and verified.apply and verified.statement.version == index.version:
            store.confirm(issued_s(verified))
        records.append(_record(signed, verified.statement, newest))
    return store.current(), records


@dataclass
class _Plan:
    generation: int
    count: int  # records on disk once it ran
    rewrite: bool
    parts: Callable[[], list[bytes]]


class PolicyJournal:
    """The journal of one node: loaded at start, then kept by following the store."""

    def __init__(self, file: JournalFile, *, min_interval_s: float = 0.5) -> None:
        self._file = file
        self._min_interval_s = min_interval_s
        self._records: list[Record] = []  # the base first
        self._written = 0  # records of ``_records`` in the file on disk
        self._rewrite = False  # the file must be written whole (new base, compaction)
        self._generation = 0  # bumped by every change other than an append
        self._confirms = 0  # confirmations in ``_records``
        self._dirty = asyncio.Event()
        self._writing: asyncio.Future[None] | None = None  # the write under way
        self.problem = ""  # why the stored journal was refused at start
        self.writes = 0
        self.failures = 0

    @property
    def path(self) -> Path:
        return self._file.path

    # --- start ------------------------------------------------------------------------------

    def load(self, trust: PolicyTrust) -> PolicyIndex:
        """The policy the stored journal makes (empty when there is none, or when it is
        refused: then it is moved aside and ``problem`` says why)."""
        legacy = self.path.with_name(LEGACY_FILE)
        if legacy.exists():
            aside = move_aside(legacy, "unsigned")
            log.warning(
                "%s (from an earlier release) is not signed and is not used; moved to %s",
                legacy.name,
                aside.name,
            )
        try:
            with trust.refusals("journal"):
                read = self._file.read()
                if read is None:
                    return PolicyIndex.empty()
                index, replayed = replay(read.records, trust)
                # The sizes on disk (a compaction copies the base by its size).
                records = [replace(r, size=n) for r, n in zip(replayed, read.sizes, strict=True)]
        except PolicyRefused as exc:
            aside = self._file.move_aside()
            self.problem = (
                f"last-known-good policy refused ({exc.reason.value}: {exc.detail}); "
                f"moved aside to {aside.name}"
            )
            log.error("%s; starting WITHOUT a policy", self.problem)
            return PolicyIndex.empty()
        self._records = [replace(r, signed=None) if i == 0 else r for i, r in enumerate(records)]
        self._written = len(records)
        self._confirms = sum(1 for r in records if r.kind in (Kind.CONFIRM, Kind.PONG))
        if read.torn:
            self._mark_rewrite()
        return index

    def adopt(self, records: list[Record]) -> None:
        """Take the records of a verified policy file as the journal (written soon)."""
        self._records = list(records)
        self._confirms = sum(1 for r in records if r.kind in (Kind.CONFIRM, Kind.PONG))
        self._mark_rewrite()

    def attach(self, store: PolicyStore) -> None:
        store.subscribe(self._on_change)

    # --- what it holds ----------------------------------------------------------------------

    @property
    def has_base(self) -> bool:
        return bool(self._records)

    def kids(self) -> frozenset[str]:
        """The keys that signed what the journal holds (a rotation re-bases it)."""
        return frozenset(r.statement.kid for r in self._records)

    def describe(self) -> dict[str, object]:
        """The journal's part of ``/readyz``."""
        return {
            "records": len(self._records),
            "signed_by": sorted(self.kids()),
            "writes": self.writes,
            "write_failures": self.failures,
        }

    @property
    def wants_snapshot(self) -> bool:
        """Whether the next refresh should fetch a full snapshot (no base yet, or the
        part after the base grew larger than the base)."""
        if not self._records:
            return True
        base = self._records[0].size
        tail = sum(r.size for r in self._records[1:] if r.kind in (Kind.DELTA, Kind.CHANGE))
        return tail > max(MIN_TAIL_BYTES, base)

    # --- following the store ----------------------------------------------------------------

    def _mark_rewrite(self) -> None:
        self._rewrite = True
        self._generation += 1
        self._dirty.set()

    def _on_change(self, op: PolicyOp, index: PolicyIndex) -> None:
        signed = op.signed
        if op.kind in ("snapshot", "replace"):
            if signed is None:
                # Policy from an (allowed) unsigned file: nothing here can vouch for it.
                self._records, self._confirms = [], 0
                self._mark_rewrite()
                return
            assert isinstance(op.body, PolicySnapshot)
            base = _record(signed, signed.statement(), op.body.version)
            keep = [] if op.kind == "replace" else self._records[1:]
            kept = [
                r
                for r in keep
                if r.kind in (Kind.DELTA, Kind.CHANGE) and r.newest > op.body.version
            ]
            self._records, self._confirms = [base, *kept], 0
            self._mark_rewrite()
            return
        if signed is None or not self._records:
            return  # nothing signed to keep, or no base to replay it onto
        statement = signed.statement()
        if op.kind == "delta":
            assert isinstance(op.body, PolicyDelta)
            self._records.append(_record(signed, statement, _newest_of_delta(op.body)))
        elif op.kind == "push":
            self._records.append(_record(signed, statement, statement.version))
        elif op.kind == "confirm":
            self._records.append(_record(signed, statement, statement.version))
            self._confirms += 1
            if self._confirms > MAX_CONFIRMS:
                self._drop_superseded_confirms()
        self._dirty.set()

    def _drop_superseded_confirms(self) -> None:
        last = max(i for i, r in enumerate(self._records) if r.kind in (Kind.CONFIRM, Kind.PONG))
        self._records = [
            r
            for i, r in enumerate(self._records)
            if i == last or r.kind not in (Kind.CONFIRM, Kind.PONG)
        ]
        self._confirms = 1
        self._mark_rewrite()

    # --- writing ----------------------------------------------------------------------------

    def _plan(self) -> _Plan:
        records = list(self._records)
        if self._rewrite:
            base = records[0] if records else None
            file = self._file

            def whole() -> list[bytes]:
                if base is None:
                    return []
                head = encode_record(base.signed) if base.signed else file.head(base.size)
                return [head, *(encode_record(r.signed) for r in records[1:] if r.signed)]

            return _Plan(self._generation, len(records), True, whole)
        new = records[self._written :]
        return _Plan(
            self._generation,
            len(records),
            False,
            lambda: [encode_record(r.signed) for r in new if r.signed],
        )

    def _run(self, plan: _Plan) -> None:
        parts = plan.parts()
        if plan.rewrite:
            if parts:
                self._file.rewrite(parts)
            else:
                self._file.remove()
        elif parts:
            self._file.append(parts)

    async def flush(self) -> None:
        """Write what changed since the last write (one write at a time: a write whose
        caller was cancelled, at shutdown, finishes before the next one starts)."""
        while self._writing is not None:
            await asyncio.shield(self._writing)
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        self._writing = asyncio.ensure_future(self._write(self._plan()))
        await asyncio.shield(self._writing)

    async def _write(self, plan: _Plan) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self._run, plan)
        except OSError:
            self.failures += 1
            self._dirty.set()  # again with the next change or at shutdown
            log.exception("could not write the policy journal %s", self.path)
            return
        finally:
            self._writing = None
        self.writes += 1
        if plan.generation == self._generation:
            self._written = plan.count
            if plan.rewrite:
                self._rewrite = False
                if self._records and self._records[0].signed is not None:
                    self._records[0] = replace(self._records[0], signed=None)  # on disk now
        log.debug(
            "policy journal written (%s, %d records, %.1f ms)",
            "whole" if plan.rewrite else "appended",
            plan.count,
            (time.monotonic() - started) * 1000,
        )

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._min_interval_s)
            await self.flush()


# --- a policy file given by the operator --------------------------------------------------


@dataclass(frozen=True)
class PolicyFile:
    index: PolicyIndex
    records: list[Record]  # empty for an unsigned file
    snapshot: PolicySnapshot | None = None  # an unsigned file's snapshot

    @property
    def signed(self) -> bool:
        return bool(self.records)


def load_policy_file(
    path: Path, trust: PolicyTrust, *, allow_unsigned: bool, now: float
) -> PolicyFile:
    """Read and verify an operator's policy file (see the module doc);
    ``PolicyFileError`` when it cannot be used (a refusal of a signed one is counted)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read ({exc.strerror})") from None
    if data.startswith(SIGNED_PREFIX):
        try:
            with trust.refusals("policy file"):
                index, records = replay(decode_records(data, allow_torn=False).records, trust)
        except PolicyRefused as exc:
            raise PolicyFileError(f"{path}: refused ({exc.reason.value}: {exc.detail})") from None
        return PolicyFile(index, records)
    if not allow_unsigned:
        raise PolicyFileError(
            f"{path}: not a signed policy file (export one with `seg-gateway fetch-policy`, "
            "or set SEG_GW_ALLOW_UNSIGNED_POLICY_FILE=true to accept plain PolicySnapshot JSON)"
        )
    try:
        snapshot = PolicySnapshot.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PolicyFileError(
            f"{path}: not a valid PolicySnapshot ({exc.error_count()} errors; first at "
            f"{where or 'top level'}: {first.get('msg')})"
        ) from None
    return PolicyFile(PolicyIndex.from_snapshot(snapshot, now), [], snapshot)
