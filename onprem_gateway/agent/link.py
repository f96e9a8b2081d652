"""The control-plane link: the refresh schedule and the push WebSocket (asyncio; never on
the request path). Fetching itself is ``policy_sync.PolicySync``.

``ControlPlaneLink`` runs two tasks:

- the refresh loop: a full fetch at start (retried with backoff until it succeeds), then
  one every Rules Refresh Interval (the cluster's ``refresh_interval_s``, or the node's
  override);
- the WebSocket loop: it feeds socket outcomes, timers and messages as events into the
  pure ``Lifecycle`` and executes the commands it returns.

Every report interval the node sends a keepalive with its applied version and, when its
policy is exact (``PolicyIndex.exact``), the policy digest; the pong must come within
the pong deadline, or the control plane counts as unresponsive and the connection is
replaced. What a pong means for the policy is ``core.convergence.judge_pong``.

Every message is a ``signed`` envelope and is verified (``policy_trust``) before it is
acted on: a message that does not verify is counted and dropped, and changes nothing
(only a verified ``revoked`` stops the link; a forged pong is no answer to the pong
deadline). A verified pong that is older than what the node holds (a push overtook it,
or the control plane reused one signed pong for many nodes) still answers the keepalive
and its verdict is acted on, but it gives no freshness. An applied pong's freshness is
its signed issue time, never this node's clock. A push signed by a key the node does
not know triggers a refresh (at most once a minute), whose first step fetches the key
set: a node that missed the announcement of a new key learns it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from onprem_gateway.agent.cloud import ssl_context
from onprem_gateway.agent.lifecycle import (
    Command,
    ConnectionClock,
    Event,
    Lifecycle,
    classify_connect_status,
)
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_sync import LinkStatus, PolicySync
from onprem_gateway.agent.policy_trust import PolicyRefused, PolicyTrust, issued_s
from onprem_gateway.config import MAX_KEEPALIVE_S  # API Gateway's 10-minute idle limit
from onprem_gateway.core.convergence import PongAction, judge_pong, keepalive_interval
from onprem_gateway.core.policy_index import PolicyMismatchError
from seg_contract import GatewayKeepalive, PushPong, PushResync, PushRevoked
from seg_contract.http import (
    CREDENTIAL_REJECTED_HEADER,
    CREDENTIAL_REJECTED_VALUE,
    NODE_ID_HEADER,
    NODE_ID_QUERY,
)
from seg_contract.signing import RejectReason, SignedPayload, Verified

log = logging.getLogger(__name__)

# How often the connected loop re-reads its timers, and the least time between two
# reports when a caught-up policy brings one forward.
WAKE_S = 1.0
REPORT_SPACING_S = 2.0

# API Gateway caps a WebSocket message at 128 KB; a push is far smaller.
MAX_PUSH_BYTES = 256 * 1024
CLOSE_TIMEOUT_S = 2.0
# A push signed by an unknown key asks for a refresh (which learns the key set) at most
# this often: a stream of forged pushes must not turn into a stream of fetches.
KEY_REFRESH_MIN_INTERVAL_S = 60.0


@dataclass(frozen=True)
class LinkSettings:
    ws_url: str
    credential: str = field(repr=False)  # never in a log line or a traceback
    node_id: str
    keepalive_interval_s: float | None  # None: the cluster's report interval
    reconnect_after_s: float
    open_timeout_s: float
    refresh_interval_override_s: float | None
    ca_bundle: Path | None
    gateway_version: str = ""
    pong_timeout_s: float = 10.0


class ControlPlaneLink:
    def __init__(
        self,
        settings: LinkSettings,
        sync: PolicySync,
        store: PolicyStore,
        status: LinkStatus,
        trust: PolicyTrust,
        *,
        backoff: Callable[[], Iterator[float]],
        spool_depth: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._sync = sync
        self._store = store
        self.status = status
        self._trust = trust
        self._backoff = backoff
        self._spool_depth = spool_depth
        self._clock = clock
        self.lifecycle = Lifecycle()
        self._ws: ClientConnection | None = None
        self._delays: Iterator[float] = backoff()
        self._conn_clock: ConnectionClock | None = None
        self._delta_task: asyncio.Task[None] | None = None
        self._replace_task: asyncio.Task[None] | None = None
        self._delta_again = False
        self._replace_reason = ""  # why the next replacement (set with the event)
        self._pending_uncommitted: int | None = None  # core.convergence.judge_pong
        self._trusted_up_to = 0  # the newest version the last replacement brought
        self._replacements = 0  # replacements done; a verdict on an older policy is stale
        self._reported_generation = 0  # ``_replacements`` when the last keepalive went out
        self._refresh_now = asyncio.Event()
        self._key_refresh_at: float | None = None  # monotonic time of the last one asked

    # --- the two loops ----------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self.run_refresh(), self.run_websocket())

    async def run_refresh(self) -> None:
        delays: Iterator[float] | None = None
        while not self.status.fatal and not self.lifecycle.terminal:
            ok = await self._sync.full()
            if ok:
                delays = None
                wait = self._settings.refresh_interval_override_s or float(
                    self._store.current().settings.refresh_interval_s
                )
            else:
                delays = delays or self._backoff()
                wait = next(delays)
            if self.status.fatal:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), wait)
            self._refresh_now.clear()
        log.info("refresh loop ended: %s", self.status.fatal_reason or "stopped")

    async def run_websocket(self) -> None:
        commands = list(self._handle(Event.START))
        try:
            while True:
                event = await self._execute(commands)
                if event is None:
                    if self.lifecycle.terminal:
                        return
                    event = await self._wait_connected()
                commands = list(self._handle(event))
        finally:
            if not self.lifecycle.terminal:  # cancelled: a revoked link stays "revoked"
                self._handle(Event.STOP)
            await self._close()
            for task in (self._delta_task, self._replace_task):
                if task is not None:
                    task.cancel()

    # --- lifecycle plumbing ---------------------------------------------------------------

    def _handle(self, event: Event) -> tuple[Command, ...]:
        commands = self.lifecycle.handle(event)
        self.status.state = self.lifecycle.state
        return commands

    async def _execute(self, commands: list[Command]) -> Event | None:  # noqa: PLR0912
        """Run the commands in order; the one that waits for an outcome returns it."""
        outcome: Event | None = None
        for command in commands:
            if command is Command.CONNECT:
                outcome = await self._connect()
            elif command is Command.CLOSE:
                await self._close()
            elif command is Command.SLEEP_BACKOFF:
                delay = next(self._delays)
                log.info("control-plane WebSocket: reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
                outcome = Event.BACKOFF_ELAPSED
            elif command is Command.RESET_BACKOFF:
                self._delays = self._backoff()
            elif command is Command.ARM_TIMERS:
                now = time.monotonic()
                self._conn_clock = ConnectionClock(
                    now,
                    now,
                    self.keepalive_interval_s(),
                    self._settings.reconnect_after_s,
                    self._settings.pong_timeout_s,
                )
            elif command is Command.SEND_KEEPALIVE:
                await self._send_keepalive()
            elif command is Command.FETCH_DELTA:
                self.request_delta()
            elif command is Command.FETCH_REPLACEMENT:
                self.request_replacement(self._replace_reason or "resync_full")
            elif command is Command.CONFIRM_CREDENTIAL:
                outcome = await self._confirm_credential()
            elif command is Command.REPORT_UNRESPONSIVE:
                self._report_unresponsive()
            elif command is Command.REPORT_FATAL:
                if not self.status.fatal_reason:
                    self.status.fatal_reason = "credential revoked by the control plane"
                log.error("control-plane link stopped: %s", self.status.fatal_reason)
                self._refresh_now.set()  # let the refresh loop see it and end
        return outcome

    def keepalive_interval_s(self) -> float:
        """The cluster's report interval (from the applied settings), or the node's own
        setting where shorter."""
        return keepalive_interval(
            float(self._store.current().settings.report_interval_s),
            self._settings.keepalive_interval_s,
            MAX_KEEPALIVE_S,
        )

    def _ws_url(self) -> str:
        parts = urlsplit(self._settings.ws_url)
        query = (
            parts.query
            + ("&" if parts.query else "")
            + urlencode({NODE_ID_QUERY: self._settings.node_id})
        )
        return urlunsplit(parts._replace(query=query))

    async def _connect(self) -> Event:
        url = self._ws_url()
        kwargs: dict[str, object] = {}
        if url.startswith("wss:"):
            kwargs["ssl"] = ssl_context(self._settings.ca_bundle)
        try:
            self._ws = await connect(
                url,
                additional_headers={
                    "Authorization": f"Bearer {self._settings.credential}",
                    NODE_ID_HEADER: self._settings.node_id,
                },
                user_agent_header="seg-gateway",
                proxy=None,
                open_timeout=self._settings.open_timeout_s,
                # Liveness is our JSON keepalive + pong (API Gateway's idle timer counts
                # only data frames), not WebSocket pings.
                ping_interval=None,
                # A control plane that stopped answering will not answer a close frame
                # either: give up on the closing handshake quickly and drop the TCP.
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_PUSH_BYTES,
                **kwargs,  # type: ignore[arg-type]
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            mark = exc.response.headers.get(CREDENTIAL_REJECTED_HEADER, "")
            marked = mark.strip().lower() == CREDENTIAL_REJECTED_VALUE
            self.status.last_error = f"WebSocket handshake refused: HTTP {status}"
            log.warning(
                "control-plane WebSocket: handshake refused with HTTP %d%s",
                status,
                " (credential rejected by the control plane)" if marked else "",
            )
            event = classify_connect_status(status, marked=marked)
            if event is Event.CONNECT_REJECTED:
                self.status.fatal_reason = (
                    f"credential rejected by the control plane (WebSocket handshake: HTTP {status})"
                )
            return event
        except TimeoutError:
            # TCP accepted, no handshake answer: a frozen or overloaded control plane.
            self.status.last_error = "WebSocket connect failed: no answer in time"
            log.warning("control-plane WebSocket: no handshake answer in time")
            if self.status.unresponsive_since is None:
                self.status.unresponsive_since = self._clock()
            return Event.CONNECT_FAILED
        except (OSError, InvalidHandshake) as exc:
            self.status.last_error = f"WebSocket connect failed: {type(exc).__name__}"
            log.warning("control-plane WebSocket: connect failed (%s)", type(exc).__name__)
            return Event.CONNECT_FAILED
        self.status.connects += 1
        log.info("control-plane WebSocket connected (%s)", self._settings.ws_url)
        return Event.CONNECTED

    async def _confirm_credential(self) -> Event:
        """An unmarked 401/403 on the handshake: ask the policy route, whose answers keep
        their headers, whether the control plane itself refuses the credential."""
        if await self._sync.credential_rejected():
            self.status.fatal_reason = (
                "credential rejected by the control plane (WebSocket handshake refused, "
                "confirmed by GET policy)"
            )
            return Event.CREDENTIAL_REJECTED
        self.status.last_error += " (not from the control plane: a proxy or WAF? retrying)"
        log.warning("the handshake refusal did not come from the control plane; retrying")
        return Event.CREDENTIAL_NOT_REJECTED

    async def _close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S + 1)

    def _report_unresponsive(self) -> None:
        self.status.pong_deadline_misses += 1
        if self.status.unresponsive_since is None:
            self.status.unresponsive_since = self._clock()
        self.status.last_error = (
            f"control plane unresponsive: no pong within {self._settings.pong_timeout_s:g} s "
            "of a keepalive"
        )
        log.warning("%s; reconnecting", self.status.last_error)

    async def _send_keepalive(self) -> None:
        if self._ws is None or self._conn_clock is None:
            return
        index = self._store.current()
        digest = ""
        if index.exact:
            if not index.digest_known:
                # The first digest of a large policy is O(n): never on the event loop.
                await asyncio.to_thread(index.digest)
            digest = index.digest_hex()
        now = self._clock()
        refused = self._trust.rejections
        message = GatewayKeepalive(
            node_id=self._settings.node_id,
            policy_version=index.version,
            policy_age_s=max(0.0, now - index.confirmed_at) if index.loaded else 0.0,
            spool_depth=self._spool_depth(),
            gateway_version=self._settings.gateway_version,
            digest=digest,
            # The alert: what this node refused since it started (``policy_trust``).
            policy_rejections=refused.total,
            last_rejection=refused.last_reason,
            last_rejection_age_s=(
                max(0.0, now - refused.last_at) if refused.last_at is not None else None
            ),
        )
        self._conn_clock = self._conn_clock.sent(time.monotonic(), self.keepalive_interval_s())
        self._reported_generation = self._replacements
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message.model_dump_json())

    async def _wait_connected(self) -> Event:
        """While connected: the next message's event, a timer's, or LOST."""
        assert self._ws is not None and self._conn_clock is not None
        while True:
            due_at, timer_event = self._conn_clock.next_due()
            # Wake at least every WAKE_S: a caught-up policy may bring the report forward
            # (``_report_soon``), and the clock is read again then.
            timeout = min(max(0.0, due_at - time.monotonic()), WAKE_S)
            try:
                raw = await asyncio.wait_for(self._ws.recv(), timeout)
            except TimeoutError:
                if time.monotonic() < self._conn_clock.next_due()[0]:
                    continue
                return timer_event
            except ConnectionClosed:
                log.warning("control-plane WebSocket closed; reconnecting")
                return Event.LOST
            event = self._on_message(raw)
            if event is not None:
                return event

    def _on_message(self, raw: str | bytes) -> Event | None:  # noqa: PLR0911 (one per kind)
        try:
            with self._trust.refusals("push"):
                msg, verified, signed = self._trust.push(raw, self._store.current())
        except PolicyRefused as exc:
            # Not applied and not an answer to anything: the next pong, refresh or delta
            # is the backstop, and dropping the connection would not help.
            if exc.reason is RejectReason.UNKNOWN_KEY:
                self._refresh_keys_soon()
            return None
        self.status.pushes += 1
        self.status.last_contact = self._clock()
        if isinstance(msg, PushRevoked):
            self.status.fatal_reason = "credential revoked by the control plane"
            return Event.REVOKED_PUSH
        if isinstance(msg, PushResync):
            if msg.full:
                self._replace_reason = "resync_full"
                return Event.RESYNC_FULL
            return Event.RESYNC
        try:
            if isinstance(msg, PushPong):
                return self._on_pong(msg, verified, signed)
            if not verified.apply:
                log.debug("push version %d is already held: ignored", msg.version)
                return None
            result = self._store.apply_push(msg, signed=signed)
        except PolicyMismatchError as exc:
            log.warning("ignoring a push for another cluster (%s)", exc)
            return None
        log.info("push %s version %d applied (gap: %s)", msg.type, msg.version, result.gap)
        return Event.PUSH_GAP if result.gap else None

    def _refresh_keys_soon(self) -> None:
        now = time.monotonic()
        last = self._key_refresh_at
        if last is None or now - last >= KEY_REFRESH_MIN_INTERVAL_S:
            self._key_refresh_at = now
            log.info("a push signed by an unknown key: refreshing the signing keys")
            self._refresh_now.set()

    def _on_pong(self, pong: PushPong, verified: Verified, signed: SignedPayload) -> Event | None:
        now = self._clock()
        if self._conn_clock is not None:
            self._conn_clock = self._conn_clock.answered()
        status = self.status
        if status.unresponsive_since is not None:
            log.info("control plane answers again")
        status.last_pong_at, status.unresponsive_since = now, None
        index = self._store.current()
        check = pong.digest_check
        if self._reported_generation != self._replacements:
            # The keepalive it answers reported the policy a replacement has since
            # replaced: the verdict is about something the node no longer holds.
            check = "unchecked"
        status.verdict, status.verdict_version, status.verdict_at = (
            check,
            pong.checked_version,
            now,
        )
        if check == "in_sync":
            status.last_verified_at, status.last_verified_version = now, pong.checked_version
        elif check == "diverged":
            status.digest_mismatches += 1
            log.warning(
                "the control plane finds this node's policy at version %d diverged; "
                "replacing it with a fresh snapshot",
                pong.checked_version,
            )
        judgement = judge_pong(
            committed=pong.version,
            digest_check=check,
            applied=index.version,
            newest_held=index.newest_held_version,
            pending_uncommitted=self._pending_uncommitted,
            trusted_up_to=self._trusted_up_to,
        )
        self._pending_uncommitted = judgement.pending_uncommitted
        if judgement.action is PongAction.REPLACE:
            if judgement.reason == "uncommitted":
                log.warning(
                    "this node holds policy versions up to %d that the control plane has "
                    "not committed (it is at %d); replacing the policy with a snapshot",
                    max(index.version, index.newest_held_version),
                    pong.version,
                )
            self._replace_reason = judgement.reason
            return Event.DIVERGED
        if judgement.action is PongAction.DELTA:
            return Event.PONG_AHEAD
        if verified.apply:  # older than what is held: an answer, but no freshness
            self._store.confirm(issued_s(verified), signed)
        return None

    # --- fetches, coalesced ---------------------------------------------------------------

    def request_delta(self) -> None:
        """Fetch a delta soon; requests while one runs coalesce into one more fetch."""
        if self._delta_task is not None and not self._delta_task.done():
            self._delta_again = True
            return
        self._delta_task = asyncio.create_task(self._run_deltas(), name="policy-delta")

    def request_replacement(self, reason: str) -> None:
        """Replace the policy with a fresh snapshot soon (one at a time; ``PolicySync``
        serialises it with any delta under way)."""
        if self._replace_task is not None and not self._replace_task.done():
            return
        self._replace_task = asyncio.create_task(
            self._run_replacement(reason), name="policy-replace"
        )

    def _report_soon(self) -> None:
        """The applied version moved: report (with the digest) now rather than an
        interval later, so the control plane verifies the caught-up policy at once."""
        if self._conn_clock is not None:
            self._conn_clock = self._conn_clock.report_soon(time.monotonic(), REPORT_SPACING_S)

    async def _run_deltas(self) -> None:
        attempts = 0
        delays = self._backoff()
        while True:
            self._delta_again = False
            before = self._store.current().version
            ok = await self._sync.delta()
            if ok and self._store.current().version != before:
                self._report_soon()
            if self.status.fatal:
                return
            if not ok:
                attempts += 1
                if attempts >= 3:
                    return  # the next pong, reconnect or interval refresh tries again
                await asyncio.sleep(next(delays))
                self._delta_again = True
            if not self._delta_again:
                return

    async def _run_replacement(self, reason: str) -> None:
        delays = self._backoff()
        for _ in range(3):  # then the next pong judges again
            if await self._sync.replace(reason):
                self._replacements += 1
                # What the control plane's own snapshot holds is not "uncommitted".
                self._trusted_up_to = self._store.current().newest_held_version
                self._pending_uncommitted = None
                self._report_soon()
                return
            if self.status.fatal:
                return
            await asyncio.sleep(next(delays))
