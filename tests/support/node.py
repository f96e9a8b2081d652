"""A gateway node as the control plane's tests need one: the gateway's real policy
index (``onprem_gateway.core.policy_index.PolicyIndex``) driven by the contract's rules
(``seg_contract.models``): apply pushes per key, fetch a delta on a gap or a pong ahead
of the applied version (the snapshot when the delta is refused), report the policy
digest when holding exactly the applied version, and replace the policy with a snapshot
when told ``diverged``. The agent's own loop (``onprem_gateway.agent``) does the same
over the network; this one calls the control plane's use cases directly. Every push
must be a ``signed`` envelope that verifies with the keys the node trusts (a change the
verifier finds older than the applied version is a duplicate and skipped, as on a real
node)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lambdas.domain.errors import Gone
from onprem_gateway.core.policy_index import PolicyIndex
from seg_contract import (
    Access,
    GatewayKeepalive,
    PolicyDelta,
    PolicySnapshot,
    PushChange,
    PushMessage,
    PushPong,
    PushResync,
    PushRevoked,
)
from seg_contract.digest import policy_digest, to_hex
from seg_contract.models import PUSH_MESSAGE
from seg_contract.signing import (
    Applied,
    Kind,
    SignedMessage,
    SignedPayload,
    TrustedKey,
    Verifier,
)


class SimNode:
    def __init__(
        self,
        node_id: str,
        cluster_id: str,
        *,
        snapshot: Callable[[], PolicySnapshot],
        delta: Callable[[int], PolicyDelta],
        keys: Iterable[TrustedKey],
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._verifier = Verifier(keys)
        self._snapshot = snapshot
        self._delta = delta
        self.index = PolicyIndex.empty(cluster_id)
        self.revoked = False
        self.fetches = {"snapshot": 0, "delta": 0, "replace": 0}

    # --- fetching -------------------------------------------------------------------

    def refresh(self) -> None:
        """The bulk refresh: apply a snapshot (keeping newer entries from pushes)."""
        self.fetches["snapshot"] += 1
        self.index = self.index.apply_snapshot(self._snapshot(), 0.0)

    def replace_policy(self) -> None:
        """Anti-entropy: throw the policy away and take a fresh snapshot."""
        self.fetches["replace"] += 1
        self.index = PolicyIndex.from_snapshot(self._snapshot(), 0.0)

    def sync(self) -> None:
        """Catch up: a delta since the applied version, or the snapshot if refused."""
        if not self.index.loaded:
            self.refresh()
            return
        self.fetches["delta"] += 1
        try:
            delta = self._delta(self.index.version)
        except Gone:
            self.refresh()
            return
        self.index = self.index.apply_delta(delta, 0.0)

    # --- the WebSocket --------------------------------------------------------------

    def receive(self, data: bytes | str) -> None:
        """A frame from the WebSocket: verified, then handled (``SignatureRejected``
        when it does not verify)."""
        signed = SignedPayload.from_envelope(SignedMessage.model_validate_json(data))
        message = PUSH_MESSAGE.validate_json(signed.payload)
        verified = self._verifier.verify(
            signed,
            cluster_id=self.cluster_id,
            kinds=Kind(message.type),
            applied=Applied(version=self.index.version),
            now_ms=signed.statement().issued_at_ms,
        )
        if verified.apply or isinstance(message, PushPong):
            self.handle(message)

    def handle(self, message: PushMessage) -> None:
        if isinstance(message, PushRevoked):
            self.revoked = True
            return
        if isinstance(message, PushPong) and self._diverged(message):
            self.replace_policy()
            return
        if isinstance(message, PushChange | PushPong | PushResync):
            result = self.index.apply_push(message)
            self.index = result.index
            if result.gap:
                self.sync()

    def _diverged(self, pong: PushPong) -> bool:
        return pong.digest_check == "diverged" and pong.checked_version == self.index.version

    def keepalive(self) -> GatewayKeepalive:
        return GatewayKeepalive(
            node_id=self.node_id,
            policy_version=self.index.version,
            policy_age_s=0.0,
            spool_depth=0,
            digest=self.digest() if self.exact() else "",
        )

    # --- what the node holds --------------------------------------------------------

    def settings_version(self) -> int:
        return self.index.to_snapshot().settings_version

    def exact(self) -> bool:
        """Holds nothing newer than its applied version (its digest is comparable)."""
        if not self.index.loaded:
            return False
        newest = max(
            [self.settings_version()]
            + [e.version for e in self.index.devices()]
            + [c.version for c in self.index.credentials()]
        )
        return newest <= self.index.version

    def digest(self) -> str:
        return to_hex(
            policy_digest(
                self.index.devices(),
                self.index.credentials(),
                self.index.settings,
                self.settings_version(),
            )
        )

    def decisions(self) -> dict[str, Access]:
        return {e.key: e.access for e in self.index.devices()}
