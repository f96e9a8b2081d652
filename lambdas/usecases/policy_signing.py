"""Sign what the control plane states to gateways (``seg_contract.signing``).

``PolicySigning`` is built once per warm container (the composition roots hold it) and
signs with the registry's active key (``lambdas.domain.signing_keys``). It reads the
registry at most once per ``registry_ttl_s``, so a key activated in the console is used
by every warm container within that time; nodes trust the old and the new key
throughout, so the overlap is harmless.

Cost: KMS ``Sign`` is one request per signature (~10 ms in-region), and nothing is ever
signed per connection: a push is signed once and posted to every node of the cluster.
Answers that say the same thing to every node are *reusable* (``sign_reusable``): a
pong for (cluster, W, verdict), a 304 confirmation of (cluster, W), a key set of
(cluster, generation) is signed once and handed out again while it is younger than
``reuse_s`` (60 s by default; the statement's issue time, and so the node's freshness,
is then at most that old, well inside ``max_policy_age_s`` >= 300 s). With nodes
keeping alive every 30 s, an in-sync cluster costs at most one ``Sign`` per 60 s per warm
``ws_default`` container: <= 1,440 per cluster per day and container, whatever the number
of nodes (2,880 per node per day if every pong were signed), plus one per snapshot or
delta served, one per committed version pushed, and one per hourly refresh that ends in
a 304 (<= 24 per node per day).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lambdas.domain.errors import SigningUnavailable
from lambdas.domain.signing_keys import KeyRegistry, bootstrap
from lambdas.ports import PolicySigner, PolicySigners, SigningKeyStore
from seg_contract.key_ring import AnnouncedKey, AnnouncedState, SigningKeySet
from seg_contract.signing import Kind, SignedPayload, SigningError, issue

REGISTRY_TTL = timedelta(seconds=60)
REUSE = timedelta(seconds=60)
MAX_REUSABLE = 4096  # entries per container: a few per cluster


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class SignatureCache:
    """Signed answers by key, each reusable until ``reuse`` after it was signed
    (pure: the caller passes the time)."""

    def __init__(self, reuse: timedelta = REUSE, max_entries: int = MAX_REUSABLE) -> None:
        self._reuse = reuse
        self._max = max_entries
        self._entries: OrderedDict[Hashable, tuple[datetime, SignedPayload]] = OrderedDict()

    def get(self, key: Hashable, now: datetime) -> SignedPayload | None:
        found = self._entries.get(key)
        if found is None:
            return None
        signed_at, value = found
        if not signed_at <= now < signed_at + self._reuse:
            del self._entries[key]
            return None
        return value

    def put(self, key: Hashable, value: SignedPayload, now: datetime) -> None:
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class _Read:
    registry: KeyRegistry
    at: datetime


class PolicySigning:
    """Signs policy payloads with the active key of the registry."""

    def __init__(
        self,
        signers: PolicySigners,
        store: SigningKeyStore,
        key_arns: Sequence[str],
        *,
        registry_ttl: timedelta = REGISTRY_TTL,
        cache: SignatureCache | None = None,
    ) -> None:
        self._signers = signers
        self._store = store
        self.key_arns = tuple(key_arns)
        self._registry_ttl = registry_ttl
        self._cache = cache or SignatureCache()
        self._read: _Read | None = None

    # --- the registry -------------------------------------------------------------------

    def registry(self, now: datetime, *, fresh: bool = False) -> KeyRegistry:
        """The stored registry, or (never written) the stack's first key as the active
        one. Read again after ``registry_ttl``, or now when ``fresh``."""
        if not self.key_arns:
            raise SigningUnavailable(
                "no policy signing key is configured (SEG_POLICY_SIGNING_KEY_ARNS)"
            )
        read = self._read
        if fresh or read is None or not read.at <= now < read.at + self._registry_ttl:
            stored = self._store.get_registry()
            registry = stored if stored.generation else self.bootstrapped(now)
            read = self._read = _Read(registry, now)
        return read.registry

    def bootstrapped(self, now: datetime) -> KeyRegistry:
        """The registry of a stack that never rotated: its first key, active."""
        if not self.key_arns:
            raise SigningUnavailable(
                "no policy signing key is configured (SEG_POLICY_SIGNING_KEY_ARNS)"
            )
        first = self.signer(self.key_arns[0])
        return bootstrap(first.kid, first.key_arn, public_key_b64(first), now)

    def forget(self) -> None:
        """Drop what this container remembers (after a change to the registry)."""
        self._read = None
        self._cache.clear()

    def signer(self, key_arn: str) -> PolicySigner:
        if key_arn not in self.key_arns:
            raise SigningUnavailable(
                f"key {key_arn} is not one of this stack's policy signing keys "
                "(SEG_POLICY_SIGNING_KEY_ARNS)"
            )
        return self._signers.signer(key_arn)

    def active_signer(self, now: datetime) -> PolicySigner:
        active = self.registry(now).active
        if active is None:
            raise SigningUnavailable("the signing key registry has no active key")
        return self.signer(active.key_arn)

    # --- signing ------------------------------------------------------------------------

    def sign(
        self,
        cluster_id: str,
        kind: Kind,
        version: int,
        payload: bytes,
        now: datetime,
        *,
        since_version: int = 0,
    ) -> SignedPayload:
        """Sign ``payload`` as ``kind`` at ``version`` for ``cluster_id``, issued ``now``."""
        try:
            return issue(
                self.active_signer(now),
                cluster_id=cluster_id,
                kind=kind,
                version=version,
                payload=payload,
                issued_at_ms=epoch_ms(now),
                since_version=since_version,
            )
        except SigningError as exc:
            raise SigningUnavailable(str(exc)) from exc

    def sign_reusable(
        self,
        key: Hashable,
        *,
        cluster_id: str,
        kind: Kind,
        version: int,
        make_payload: Callable[[datetime], bytes],
        now: datetime,
    ) -> SignedPayload:
        """A signed answer that is the same for every node: reused while it is younger
        than the cache's reuse time. ``key`` must name everything the payload depends on
        besides the time (e.g. the digest verdict of a pong); ``make_payload(now)``
        builds it when a new signature is needed."""
        kid = self.active_signer(now).kid
        full_key = (kid, cluster_id, kind, version, key)
        found = self._cache.get(full_key, now)
        if found is None:
            found = self.sign(cluster_id, kind, version, make_payload(now), now)
            # Cached under the time it was signed: ``now`` is the statement's issue time.
            self._cache.put(full_key, found, now)
        return found

    def confirm(self, cluster_id: str, version: int, now: datetime) -> SignedPayload:
        """The control plane vouching that ``version`` is the cluster's current one (the
        304 of a conditional snapshot fetch): kind ``confirm``, empty payload."""
        return self.sign_reusable(
            "confirm",
            cluster_id=cluster_id,
            kind=Kind.CONFIRM,
            version=version,
            make_payload=lambda _at: b"",
            now=now,
        )

    def key_set(self, cluster_id: str, now: datetime) -> SignedPayload:
        """The keys the cluster's nodes must trust, signed by the active key."""
        registry = self.registry(now)

        def payload(_at: datetime) -> bytes:
            return key_set_of(registry, cluster_id).model_dump_json().encode()

        return self.sign_reusable(
            "keys",
            cluster_id=cluster_id,
            kind=Kind.KEYS,
            version=registry.generation,
            make_payload=payload,
            now=now,
        )


def key_set_of(registry: KeyRegistry, cluster_id: str) -> SigningKeySet:
    return SigningKeySet(
        cluster_id=cluster_id,
        version=registry.generation,
        keys=tuple(
            AnnouncedKey(kid=k.kid, public_key=k.public_key, state=AnnouncedState(k.state.value))
            for k in registry.trusted
        ),
    )


def public_key_b64(signer: PolicySigner) -> str:
    """The key as nodes pin it: standard base64 of the DER SubjectPublicKeyInfo."""
    return base64.b64encode(signer.public_key_der).decode("ascii")
