"""The shared mutable state of one EAS server (one per worker process): settings, ports,
the upstream pool, metrics, open connections, the in-flight index that revocation
walks. One small object, not module globals."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Coroutine
from typing import Any

from onprem_gateway.core.freshness import Enforcement, freshness
from onprem_gateway.core.revocation import EVERYONE, Affected
from onprem_gateway.ports import EventSink, PolicyView
from onprem_gateway.proxy.batching import WriteBatches
from onprem_gateway.proxy.bearer_cache import BearerTokens
from onprem_gateway.proxy.metrics import ProxyMetrics
from onprem_gateway.proxy.responses import http_date
from onprem_gateway.proxy.roles import InFlight, OpenConnection
from onprem_gateway.proxy.settings import ProxySettings
from onprem_gateway.proxy.substitution import CredentialSubstituter
from onprem_gateway.proxy.upstream import UpstreamPool

log = logging.getLogger(__name__)

# Held requests decided again per event-loop turn when a whole new policy is swapped in
# (a worker's replacement, the policy failing closed): ~3 µs each while still admitted,
# ~20 µs each when it gets its blocked answer. 9,500 held in one turn stalled a worker
# for ~28 ms (``bench/revocation.py --replace``).
REDECIDE_SLICE = 500


def connection_limit(configured: int) -> int:
    """The configured connection limit, lowered to what the open-files limit allows: a
    proxied request holds two descriptors (device + upstream), plus a reserve for the
    listener, the event loop and logs. Past it ``accept`` would fail with EMFILE for
    everyone; refusing the excess connection keeps the others served."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    allowed = max(1, (soft - 64) // 2)
    if allowed < configured:
        log.warning(
            "open-files limit %d allows %d connections, not the configured %d",
            soft,
            allowed,
            configured,
        )
    return min(configured, allowed)


class ServerState(WriteBatches):
    def __init__(
        self,
        settings: ProxySettings,
        *,
        policy: PolicyView,
        sink: EventSink,
        substitution: CredentialSubstituter,
        metrics: ProxyMetrics,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__()  # write coalescing: ``batching``, ``dirty``, ``end_batch``
        self.settings = settings
        self.policy = policy
        self.sink = sink
        self.substitution = substitution
        self.metrics = metrics
        self.loop = loop
        self.node_id = settings.node_id
        self.upstream_authority = settings.upstream.authority.encode("ascii")
        self.max_connections = connection_limit(settings.limits.max_connections)
        self.pool = UpstreamPool(
            settings.upstream, settings.timeouts.upstream_connect_s, metrics, self
        )
        self.connections: set[OpenConnection] = set()
        # Open connections per client address (``limits.max_connections_per_ip``).
        self.per_ip: dict[str, int] = {}
        # Admitted requests still in flight, by normalised user: what a policy change
        # decides again (``revoke``). Insertion-ordered dicts used as sets.
        self.inflight: dict[str, dict[InFlight, None]] = {}
        self.bearer = BearerTokens()
        self._blocking_all = False  # the policy was failing closed at the last sweep
        self._passes = 0  # whole-policy re-decisions begun (``revoke(EVERYONE)``)
        self.closing = False
        self.date = http_date(time.time())
        self._tasks: set[asyncio.Task[None]] = set()
        # Set when the server is closing and the last connection is gone.
        self.drained = asyncio.Event()

    def forget(self, conn: OpenConnection) -> None:
        self.connections.discard(conn)
        if self.closing and not self.connections:
            self.drained.set()

    # --- per-address connection counts ------------------------------------------------
    def count_ip(self, ip: str) -> bool:
        """Count one more connection from ``ip``; False (not counted) when over the cap."""
        cap = self.settings.limits.max_connections_per_ip
        held = self.per_ip.get(ip, 0)
        if cap and held >= cap:
            self.metrics.connections_refused_per_ip += 1
            return False
        self.per_ip[ip] = held + 1
        return True

    def uncount_ip(self, ip: str) -> None:
        held = self.per_ip.get(ip, 0) - 1
        if held > 0:
            self.per_ip[ip] = held
        else:
            self.per_ip.pop(ip, None)

    # --- in-flight index and revocation --------------------------------------------------
    def track(self, user: str, flow: InFlight) -> None:
        held = self.inflight.get(user)
        if held is None:
            self.inflight[user] = {flow: None}
        else:
            held[flow] = None

    def untrack(self, user: str, flow: InFlight) -> None:
        held = self.inflight.get(user)
        if held is not None:
            held.pop(flow, None)
            if not held:
                del self.inflight[user]

    def inflight_count(self) -> int:
        return sum(len(held) for held in self.inflight.values())

    def revoke(self, affected: Affected) -> int:
        """Decide again every in-flight request ``affected`` names, with the policy in
        force now; end those it no longer admits. Returns how many ended at once: a
        whole new policy (``EVERYONE``) decides every held request again, a slice per
        event-loop turn (``REDECIDE_SLICE``), each slice with the policy in force when
        its turn comes."""
        if not affected or not self.inflight:
            return 0
        if affected.everyone:
            self._passes += 1
            targets = [ex for held in self.inflight.values() for ex in held]
            return self._recheck_slice(self._passes, targets, 0)
        return self._recheck([ex for user in affected.users for ex in self.inflight.get(user, ())])

    def _recheck_slice(self, pass_number: int, targets: list[InFlight], start: int) -> int:
        if pass_number != self._passes:
            return 0  # a later whole-policy pass decides these again
        end = start + REDECIDE_SLICE
        ended = self._recheck(targets[start:end])
        if end < len(targets):
            self.loop.call_soon(self._recheck_slice, pass_number, targets, end)
        return ended

    def _recheck(self, targets: list[InFlight]) -> int:
        policy = self.policy.current()
        now = time.time()
        ended = 0
        batching, self.batching = self.batching, True  # one send per connection
        try:
            for flow in targets:
                ended += flow.recheck(policy, now)
        finally:
            if not batching:
                self.end_batch()
        return ended

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def sweep(self) -> None:
        """Enforce idle timeouts and expire idle upstream connections (run ~1/s)."""
        now = self.loop.time()
        self.date = http_date(time.time())
        expired = [
            c
            for c in self.connections
            if now - c.last_active > c.timeout or 0.0 < c.head_deadline < now
        ]
        for conn in expired:
            conn.idle_expired(now)
        self.pool.expire_idle(now, self.settings.timeouts.upstream_pool_idle_s)
        # Time alone can make the policy fail closed (its maximum age passes without
        # contact): that ends held requests too, once, when it happens.
        blocking = freshness(self.policy.current(), time.time()).enforcement is (
            Enforcement.BLOCK_ALL
        )
        if blocking and not self._blocking_all:
            self.revoke(EVERYONE)
        self._blocking_all = blocking

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
