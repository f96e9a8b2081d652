"""Policy fetches from the control plane into the store, and the link's status.

``PolicySync`` fetches the full snapshot (ETag-aware: ``If-None-Match`` names the applied
version, so an up-to-date node gets a 304 whose signed confirmation keeps the policy
fresh), deltas (410, or a delta that cannot apply -> the full snapshot) and
*replacements* (a full snapshot fetched without an ETag and taken as it is, after a
``diverged`` verdict), one at a time under one lock. Every answer is verified
(``policy_trust``) before it is parsed, and the policy's freshness is the verified issue
time, never this node's clock.

Each refresh first fetches the cluster's signed key set (a rotation announces the next
key this way). It asks for the full snapshot instead of a 304 when the journal wants a
new base (``policy_journal``), or when what the journal holds was signed by a key that
is no longer the active one: the stored policy is then signed again by the new key
before the old key is retired.

The control plane's own refusal of the credential marks the link fatal
(``LinkStatus.fatal_reason``); refused input (``PolicyRefused``) and any other failure
are counted and left to the caller's retry schedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from onprem_gateway.agent.cloud import (
    ControlPlaneClient,
    ControlPlaneUnavailable,
    CredentialRejected,
)
from onprem_gateway.agent.gc_pause import collector_paused
from onprem_gateway.agent.lifecycle import State
from onprem_gateway.agent.policy_journal import PolicyJournal
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_trust import PolicyRefused, PolicyTrust, issued_s
from onprem_gateway.agent.turns import in_turns, release_gradually
from onprem_gateway.core.policy_index import PolicyIndex, PolicyMismatchError

log = logging.getLogger(__name__)


@dataclass
class LinkStatus:
    """What health, metrics and keepalives report about the link."""

    state: State = State.IDLE
    fatal_reason: str = ""
    last_contact: float | None = None  # epoch seconds of the last good answer
    last_error: str = ""
    connects: int = 0
    snapshots: int = 0
    not_modified: int = 0
    deltas: int = 0
    pushes: int = 0
    fetch_failures: int = 0
    fetches_refused: int = 0  # answers that did not verify (``policy_trust``)
    # Liveness: the pong that answers each keepalive (epoch seconds).
    last_pong_at: float | None = None
    unresponsive_since: float | None = None  # a pong deadline was missed; None after a pong
    pong_deadline_misses: int = 0
    # Anti-entropy: the control plane's last verdict on the digest the node reported.
    verdict: str = ""  # in_sync | diverged | unchecked ("" before the first pong)
    verdict_version: int = 0  # the version the verdict is about
    verdict_at: float | None = None
    last_verified_at: float | None = None  # the last in_sync verdict
    last_verified_version: int = 0
    digest_mismatches: int = 0  # diverged verdicts
    # Full replacements of the policy by reason (diverged, uncommitted, resync_full).
    replacements: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def fatal(self) -> bool:
        return bool(self.fatal_reason)


class PolicySync:
    """Snapshot and delta fetches into the store, serialised by one lock."""

    def __init__(
        self,
        client: ControlPlaneClient,
        store: PolicyStore,
        status: LinkStatus,
        trust: PolicyTrust,
        *,
        journal: PolicyJournal | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._store = store
        self._status = status
        self._trust = trust
        self._journal = journal
        self._clock = clock
        self._lock = asyncio.Lock()

    async def full(self) -> bool:
        async with self._lock:
            return await self._guarded(self._full_locked)

    async def delta(self) -> bool:
        async with self._lock:
            return await self._guarded(self._delta_locked)

    async def replace(self, reason: str) -> bool:
        """Replace the policy with a fresh snapshot, keeping nothing it does not hold
        (pushes that arrive meanwhile are applied again on top: ``PolicyStore``)."""
        async with self._lock:
            self._store.begin_replace()
            try:
                return await self._guarded(lambda: self._replace_locked(reason))
            finally:
                self._store.abandon_replace()  # a no-op after a successful replace

    async def credential_rejected(self) -> bool:
        """Whether the control plane itself refuses the credential (one HTTP call)."""
        return await self._client.credential_rejected()

    async def _guarded(self, fetch: Callable[[], Awaitable[None]]) -> bool:
        try:
            await fetch()
        except CredentialRejected as exc:
            self._status.fatal_reason = f"credential rejected by the control plane ({exc})"
            log.error("%s", self._status.fatal_reason)
            return False
        except ControlPlaneUnavailable as exc:
            self._status.fetch_failures += 1
            self._status.last_error = str(exc)
            log.warning("policy fetch failed: %s", exc)
            return False
        except PolicyRefused as exc:
            self._status.fetches_refused += 1  # counted and logged by the trust already
            self._status.last_error = str(exc)
            return False
        self._status.last_contact = self._clock()
        return True

    async def _refresh_keys(self) -> None:
        """Learn the cluster's current key set (best effort: the policy fetch that
        follows does not depend on it)."""
        try:
            with self._trust.refusals("keys"):
                self._trust.learn_keys(await self._client.fetch_signing_keys())
        except ControlPlaneUnavailable as exc:
            log.info("signing keys not refreshed: %s", exc)
        except PolicyRefused:
            pass

    def _want_full(self) -> str:
        """Why the refresh must fetch the full snapshot instead of a 304 ("" if not)."""
        journal = self._journal
        if journal is None:
            return ""
        if journal.wants_snapshot:
            return "the journal wants a new base"
        active = self._trust.active_kid
        if active and journal.has_base and journal.kids() - {active}:
            return f"the stored policy is signed by a key other than the active one ({active})"
        return ""

    async def _full_locked(self) -> None:
        await self._refresh_keys()
        index = self._store.current()
        reason = self._want_full() if index.loaded else "no policy yet"
        etag = None if reason else f'"{index.cluster_id}-{index.version}"'
        if reason and index.loaded:
            log.info("fetching the full snapshot: %s", reason)
        with self._trust.refusals("snapshot"):
            answer = await self._client.fetch_snapshot(etag)
        if not answer.modified:
            if etag is None:
                raise ControlPlaneUnavailable("GET policy without If-None-Match answered 304")
            with self._trust.refusals("confirm"):
                verified = self._trust.confirmation(
                    answer.signed, self._store.current(), asked=index.version
                )
            self._status.not_modified += 1
            if verified.apply:
                self._store.confirm(issued_s(verified), answer.signed)
            return
        with collector_paused():
            with self._trust.refusals("snapshot"):
                snapshot, verified = await in_turns(self._trust.snapshot_in_slices(answer.signed))
            issued = issued_s(verified)
            built = await in_turns(PolicyIndex.build_in_slices(snapshot, issued))
            self._status.snapshots += 1
            previous = await in_turns(
                self._store.apply_snapshot_in_slices(snapshot, issued, built, answer.signed)
            )
        log.info(
            "policy snapshot applied: cluster %s version %d, %d devices",
            snapshot.cluster_id,
            snapshot.version,
            len(snapshot.devices),
        )
        # The policy taken over goes a slice per turn; no frame here may hold it.
        release = release_gradually(previous.references())
        del previous, index
        await release

    async def _replace_locked(self, reason: str) -> None:
        with self._trust.refusals("snapshot"):
            answer = await self._client.fetch_snapshot(None)
            if not answer.modified:  # no ETag was sent, so a 304 is not an answer to us
                raise ControlPlaneUnavailable("GET policy without If-None-Match answered 304")
        before = self._store.current()
        with collector_paused():
            with self._trust.refusals("snapshot"):
                snapshot, verified = await in_turns(self._trust.snapshot_in_slices(answer.signed))
            issued = issued_s(verified)
            built = await in_turns(PolicyIndex.build_in_slices(snapshot, issued))
            self._status.snapshots += 1
            previous = self._store.current()
            self._store.replace_with_snapshot(snapshot, issued, answer.signed, built)
            # Counted with the swap: the release below takes turns, and whoever sees the
            # new policy must also see it counted.
            self._status.replacements[reason] = self._status.replacements.get(reason, 0) + 1
        log.warning(
            "policy replaced by the control plane's snapshot: version %d (was %d), "
            "%d devices (was %d)",
            snapshot.version,
            before.version,
            len(snapshot.devices),
            before.device_count(),
        )
        release = release_gradually(previous.references())
        del previous, before
        await release

    async def _delta_locked(self) -> None:
        index = self._store.current()
        if not index.loaded:
            await self._full_locked()
            return
        with self._trust.refusals("delta"):
            signed = await self._client.fetch_delta(index.version)
        if signed is None:
            log.info("delta since %d is gone (410); fetching the snapshot", index.version)
            await self._full_locked()
            return
        with self._trust.refusals("delta"):
            delta, verified = self._trust.delta(signed, self._store.current(), since=index.version)
        if not verified.apply:
            log.info(
                "delta %d..%d is older than the policy held: nothing to apply",
                delta.since_version,
                delta.version,
            )
            return
        try:
            self._store.apply_delta(delta, issued_s(verified), signed)
        except PolicyMismatchError as exc:
            log.warning("delta not applicable (%s); fetching the snapshot", exc)
            await self._full_locked()
            return
        self._status.deltas += 1
        log.info("policy delta %d..%d applied", delta.since_version, delta.version)
