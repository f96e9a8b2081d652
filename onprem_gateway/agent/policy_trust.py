"""What a gateway node trusts, and the one place it decides whether signed policy input
may be applied (``seg_contract.signing`` defines the statement and its rules).

``PolicyTrust`` holds the node's keys (pinned in its configuration, plus those learned
from key sets signed by a key it already trusted: ``seg_contract.key_ring``), the
cluster its credential names, and the count of what it refused. Every snapshot, delta,
304 confirmation and WebSocket push goes through one of its methods before anything
reads the payload; what comes back is the parsed model and the ``Verified`` statement,
whose issue time is the node's only source of freshness.

Which version each kind is compared against (``Applied`` of ``Verifier.verify``):

- a snapshot: the newest version the *control plane* stated to this node (in a
  snapshot, delta, confirmation or pong). The control plane's committed version never
  goes back, so an older snapshot can only be a replay. The node's own applied version
  is not the bar: it may be ahead of the committed version for a moment (a push of
  W + 1 lands before W moves), and a snapshot of W is then authentic and harmless
  (pushed entries newer than it are kept);
- a delta, a change: the applied version (older ones are authentic no-ops);
- a pong, a confirmation: the applied version and the newest issue time held (older
  ones give no freshness).

Everything refused raises ``PolicyRefused`` after it was counted
(``seg_gateway_policy_rejected_total{reason}``), logged and kept as the last refusal
(``/readyz``, the keepalive's alert fields). Refused input is never applied: the node
keeps enforcing its last verified policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import ValidationError

from onprem_gateway.agent.signing_keys_file import SigningKeysFile
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.core.snapshot_slices import parse_in_slices
from onprem_gateway.core.steps import Steps, finish
from seg_contract import PolicyDelta, PolicySnapshot, PushMessage, PushRevoked
from seg_contract.key_ring import AnnouncedState, KeyRing, SigningKeySet
from seg_contract.models import PUSH_MESSAGE
from seg_contract.signing import (
    Applied,
    Kind,
    RejectReason,
    SignatureRejected,
    SignedMessage,
    SignedPayload,
    TrustedKey,
    Verified,
)

log = logging.getLogger(__name__)

PUSH_KINDS = frozenset({Kind.CHANGE, Kind.RESYNC, Kind.REVOKED, Kind.PONG})
# The kinds whose version is the control plane's committed version W.
STATED_KINDS = frozenset({Kind.SNAPSHOT, Kind.DELTA, Kind.CONFIRM, Kind.PONG})


class PolicyRefused(Exception):
    """Signed input that was not applied (already counted and logged)."""

    def __init__(self, reason: RejectReason, detail: str, source: str) -> None:
        super().__init__(f"{source} refused ({reason.value}): {detail}")
        self.reason = reason
        self.detail = detail
        self.source = source


@dataclass
class Rejections:
    """What the node refused since it started."""

    by_reason: dict[str, int] = field(default_factory=dict)
    last_reason: str = ""
    last_detail: str = ""
    last_source: str = ""  # snapshot | delta | confirm | push | keys | journal | policy file
    last_at: float | None = None  # epoch seconds

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def issued_s(verified: Verified) -> float:
    """The statement's issue time in epoch seconds (the freshness it vouches for)."""
    return verified.statement.issued_at_ms / 1000


def active_kid(signed: SignedPayload) -> str:
    """The active key of a verified key set ("" when the payload is not one)."""
    try:
        key_set = SigningKeySet.model_validate_json(signed.payload)
    except ValueError:
        return ""
    return next((k.kid for k in key_set.keys if k.state is AnnouncedState.ACTIVE), "")


def _parse_error(what: str, exc: ValidationError) -> SignatureRejected:
    # Signed, yet not the model its kind promises: a control-plane bug, refused all
    # the same (never partly applied).
    return SignatureRejected(RejectReason.MALFORMED, f"not a {what} ({exc.error_count()} errors)")


class PolicyTrust:
    def __init__(
        self,
        pins: tuple[TrustedKey, ...],
        *,
        cluster_id: str,
        max_skew_s: float,
        keys_file: SigningKeysFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster_id = cluster_id  # "" (air-gapped): the policy file's own cluster
        self.max_skew_ms = int(max_skew_s * 1000)
        self._clock = clock
        self._keys_file = keys_file
        self.ring = KeyRing(pinned=pins)
        self.keys_problem = ""  # why a stored key chain was refused at start
        self.active_kid = ""  # the active key of the newest key set ("" before one)
        self.stated = 0  # the newest committed version the control plane stated
        self.rejections = Rejections()
        self._verifier = self.ring.verifier(max_skew_ms=self.max_skew_ms)
        if keys_file is not None and cluster_id:
            loaded = keys_file.load(pins, cluster_id, self.now_ms(), self.max_skew_ms)
            self.keys_problem = loaded.problem
            self._set_ring(loaded.ring)
            newest = keys_file.newest
            self.active_kid = active_kid(newest) if newest is not None else ""

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _set_ring(self, ring: KeyRing) -> None:
        self.ring = ring
        self._verifier = ring.verifier(max_skew_ms=self.max_skew_ms)

    # --- refusals -------------------------------------------------------------------------

    def refuse(self, exc: SignatureRejected, source: str) -> PolicyRefused:
        r = self.rejections
        r.by_reason[exc.reason.value] = r.by_reason.get(exc.reason.value, 0) + 1
        r.last_reason, r.last_detail, r.last_source = exc.reason.value, exc.detail, source
        r.last_at = self._clock()
        log.warning(
            "refused signed %s (%s): %s; the policy in force is kept",
            source,
            exc.reason.value,
            exc.detail,
        )
        return PolicyRefused(exc.reason, exc.detail, source)

    @contextmanager
    def refusals(self, source: str) -> Iterator[None]:
        """Turn a ``SignatureRejected`` raised inside into a counted ``PolicyRefused``."""
        try:
            yield
        except SignatureRejected as exc:
            raise self.refuse(exc, source) from None

    # --- verification -----------------------------------------------------------------------

    def _verify(
        self,
        signed: SignedPayload,
        kinds: Kind | frozenset[Kind],
        applied: Applied,
        *,
        live: bool,
        since_version: int | None = None,
    ) -> Verified:
        cluster_id = self.cluster_id or signed.statement().cluster_id
        return self._verifier.verify(
            signed,
            cluster_id=cluster_id,
            kinds=kinds,
            applied=applied,
            now_ms=self.now_ms(),
            live=live,
            since_version=since_version,
        )

    def note_stated(self, verified: Verified) -> None:
        s = verified.statement
        # An empty delta "since N" at version N echoes the version asked about; it states
        # no committed version of the control plane's.
        echo = s.kind is Kind.DELTA and s.since_version == s.version
        if s.kind in STATED_KINDS and not echo:
            self.stated = max(self.stated, s.version)

    def snapshot(
        self, signed: SignedPayload, *, live: bool = True
    ) -> tuple[PolicySnapshot, Verified]:
        """A snapshot to apply or to replace the policy with (``SignatureRejected``)."""
        return finish(self.snapshot_in_slices(signed, live=live))

    def snapshot_in_slices(
        self, signed: SignedPayload, *, live: bool = True
    ) -> Steps[tuple[PolicySnapshot, Verified]]:
        """``snapshot``, a slice of devices per step (``core.snapshot_slices``): the
        agent runs a step per event-loop turn."""
        verified = self._verify(signed, Kind.SNAPSHOT, Applied(version=self.stated), live=live)
        try:
            snapshot = yield from parse_in_slices(verified.payload)
        except ValidationError as exc:
            raise _parse_error("PolicySnapshot", exc) from None
        verified.require_fields(cluster_id=snapshot.cluster_id, version=snapshot.version)
        self.note_stated(verified)
        return snapshot, verified

    def delta(
        self, signed: SignedPayload, index: PolicyIndex, *, since: int | None, live: bool = True
    ) -> tuple[PolicyDelta, Verified]:
        """The delta asked for ``since`` (None: replaying one stored)."""
        verified = self._verify(
            signed, Kind.DELTA, Applied(version=index.version), live=live, since_version=since
        )
        try:
            delta = PolicyDelta.model_validate_json(verified.payload)
        except ValidationError as exc:
            raise _parse_error("PolicyDelta", exc) from None
        verified.require_fields(
            cluster_id=delta.cluster_id, version=delta.version, since_version=delta.since_version
        )
        self.note_stated(verified)
        return delta, verified

    def confirmation(
        self, signed: SignedPayload, index: PolicyIndex, *, asked: int | None, live: bool = True
    ) -> Verified:
        """A 304's (or a stored) ``confirm``; ``asked``: the version the If-None-Match
        named (a confirmation of another version answers another question)."""
        verified = self._verify(signed, Kind.CONFIRM, _held(index), live=live)
        if asked is not None and verified.statement.version != asked:
            raise SignatureRejected(
                RejectReason.REPLAYED,
                f"confirms v{verified.statement.version}, asked about v{asked}",
            )
        self.note_stated(verified)
        return verified

    def push(
        self, raw: str | bytes, index: PolicyIndex
    ) -> tuple[PushMessage, Verified, SignedPayload]:
        """A WebSocket frame: a ``signed`` envelope of a push (with the signed input it
        carried, for the journal)."""
        try:
            envelope = SignedMessage.model_validate_json(raw)
        except ValidationError:
            try:
                PUSH_MESSAGE.validate_json(raw)
            except ValidationError:
                raise SignatureRejected(
                    RejectReason.MALFORMED, "not a signed push message"
                ) from None
            raise SignatureRejected(RejectReason.UNSIGNED, "a push without a signature") from None
        signed = SignedPayload.from_envelope(envelope)
        message, verified = self.push_payload(signed, index)
        return message, verified, signed

    def push_payload(
        self, signed: SignedPayload, index: PolicyIndex, *, live: bool = True
    ) -> tuple[PushMessage, Verified]:
        kind = signed.statement().kind
        if kind is Kind.PONG:
            applied = _held(index)
        elif kind is Kind.CHANGE:
            applied = Applied(version=index.version)
        else:
            applied = Applied()
        verified = self._verify(signed, PUSH_KINDS, applied, live=live)
        try:
            message = PUSH_MESSAGE.validate_json(verified.payload)
        except ValidationError as exc:
            raise _parse_error("push message", exc) from None
        if message.type != verified.statement.kind.value:
            raise SignatureRejected(
                RejectReason.WRONG_KIND,
                f"a {message.type} push signed as {verified.statement.kind.value}",
            )
        version = 0 if isinstance(message, PushRevoked) else message.version
        verified.require_fields(cluster_id=message.cluster_id, version=version)
        self.note_stated(verified)
        return message, verified

    # --- keys -------------------------------------------------------------------------------

    def learn_keys(self, signed: SignedPayload) -> bool:
        """Accept a key set that just arrived; True when the trusted keys changed
        (``SignatureRejected`` when it must not be accepted)."""
        if self._keys_file is None:
            raise SignatureRejected(RejectReason.UNKNOWN_KEY, "this node learns no keys")
        ring = self._keys_file.accept(
            self.ring,
            signed,
            cluster_id=self.cluster_id,
            now_ms=self.now_ms(),
            max_skew_ms=self.max_skew_ms,
        )
        if ring is self.ring:
            return False
        self._set_ring(ring)
        self.active_kid = active_kid(signed)
        log.info(
            "policy signing keys now trusted: %s (key set v%d, active %s)",
            ", ".join(k.kid for k in ring.trusted()),
            ring.keys_version,
            self.active_kid,
        )
        return True

    def describe(self) -> dict[str, object]:
        """The keys part of ``/readyz``."""
        return {
            "cluster_id": self.cluster_id,
            "pinned": [k.kid for k in self.ring.pinned],
            "learned": [k.kid for k in self.ring.learned],
            "keys_version": self.ring.keys_version,
            "active": self.active_kid,
            "problem": self.keys_problem,
        }

    def last_rejection(self, now: float) -> dict[str, object] | None:
        r = self.rejections
        if r.last_at is None:
            return None
        return {
            "reason": r.last_reason,
            "detail": r.last_detail,
            "source": r.last_source,
            "age_s": round(max(0.0, now - r.last_at), 3),
        }


def _held(index: PolicyIndex) -> Applied:
    return Applied(version=index.version, confirmed_at_ms=round(index.confirmed_at * 1000))
