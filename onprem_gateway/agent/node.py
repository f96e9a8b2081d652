"""The composition root of one gateway node: wires the policy store, the control-plane
link, the reporter, the EAS runner and the admin port, and runs them until stopped.

Start order (each step works with the control plane down):

1. the keys the node trusts (its pins, and the key sets it learned since: a stored
   chain that does not verify is moved aside and reported), then the policy:
   ``--policy-file`` if given, else the journal of signed input (``policy_journal``:
   every record verified again, enforced at once, as fresh as its newest signed issue
   time), else nothing (every request is blocked: fail closed); a journal that does not
   verify is moved aside and reported in ``/readyz``, never trusted;
2. the spool (events from before a restart are sent first) and the reporter;
3. the EAS listener (in-process or worker processes), one upstream check, the admin
   port, then ``<state_dir>/runtime.json`` (the bound ports, for tools);
4. the control-plane link (snapshot fetch, WebSocket) in the background.

Shutdown (SIGTERM/SIGINT): not ready at once (load balancers drain), stop accepting,
let held requests finish up to ``shutdown_grace_s``, stop the link, deliver or spool
the last events, write the policy, remove runtime.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

from onprem_gateway.agent.admin import AdminServer, Response
from onprem_gateway.agent.cloud import ControlPlaneClient, ssl_context
from onprem_gateway.agent.diagnostics import DiagnosticsError, explain_device
from onprem_gateway.agent.eas_runner import InProcessRunner, public_url
from onprem_gateway.agent.event_buffer import EventBuffer
from onprem_gateway.agent.gc_pause import collector_paused
from onprem_gateway.agent.lifecycle import State
from onprem_gateway.agent.link import ControlPlaneLink, LinkSettings
from onprem_gateway.agent.persist import JournalFile, atomic_write
from onprem_gateway.agent.policy_journal import PolicyFileError, PolicyJournal, load_policy_file
from onprem_gateway.agent.policy_store import PolicyStore
from onprem_gateway.agent.policy_sync import LinkStatus, PolicySync
from onprem_gateway.agent.policy_trust import PolicyTrust
from onprem_gateway.agent.reporter import Reporter
from onprem_gateway.agent.signing_keys_file import SigningKeysFile
from onprem_gateway.agent.spool import EVICTING, NEAR_FULL_STATE, Spool
from onprem_gateway.agent.telemetry import CONTENT_TYPE, render
from onprem_gateway.agent.turns import in_turns, release_gradually
from onprem_gateway.agent.worker_pool import WorkerPool
from onprem_gateway.config import GatewayConfig
from onprem_gateway.core.backoff import backoff
from onprem_gateway.core.event_fold import FoldWindows
from onprem_gateway.core.freshness import Level, freshness
from onprem_gateway.core.policy_index import PolicyIndex
from onprem_gateway.proxy.metrics import merge

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def gateway_version() -> str:
    try:
        return version("secure-email-gateway")
    except PackageNotFoundError:
        return "dev"


class Node:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.policy_source = "none"
        self.policy_problem = ""
        self.policy_signed = False  # whether the policy in force came from signed input
        self.upstream_ok: bool | None = None
        self.upstream_error = ""
        self.shutting_down = False
        self.task_failures: list[str] = []
        self.started_at = time.time()
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.trust = PolicyTrust(
            config.policy_signing_keys,
            cluster_id=config.cluster_id,
            max_skew_s=config.policy_clock_skew_s,
            keys_file=SigningKeysFile(config.state_dir) if config.connected else None,
        )
        # The journal is the last-known-good policy of a node with a control plane; an
        # air-gapped node's policy file is its own.
        self.journal = PolicyJournal(JournalFile(config.state_dir)) if config.connected else None
        self.store = PolicyStore(self._load_initial_policy())
        if self.journal is not None:
            self.journal.attach(self.store)
        self.client: ControlPlaneClient | None = None
        self.link_status: LinkStatus | None = None
        self.link: ControlPlaneLink | None = None
        if config.connected:
            self.client = ControlPlaneClient(
                config.api_url,
                config.credential,
                config.node_id,
                timeout_s=config.http_timeout_s,
                ca_bundle=config.control_plane_ca_bundle,
            )
            self.link_status = LinkStatus()
            self.link = ControlPlaneLink(
                LinkSettings(
                    ws_url=config.ws_url,
                    credential=config.credential,
                    node_id=config.node_id,
                    keepalive_interval_s=config.keepalive_interval_s,
                    pong_timeout_s=config.pong_timeout_s,
                    reconnect_after_s=config.reconnect_after_s,
                    open_timeout_s=config.http_timeout_s,
                    refresh_interval_override_s=config.refresh_interval_s,
                    ca_bundle=config.control_plane_ca_bundle,
                    gateway_version=gateway_version(),
                ),
                PolicySync(
                    self.client, self.store, self.link_status, self.trust, journal=self.journal
                ),
                self.store,
                self.link_status,
                self.trust,
                backoff=self._backoff,
                spool_depth=lambda: self.reporter.spool_depth,
            )
        self.buffer = EventBuffer()
        self.reporter = Reporter(
            self.buffer,
            Spool(config.state_dir / "spool", config.max_spool_bytes),
            self.client,
            node_id=config.node_id,
            flush_interval_s=config.event_flush_interval_s,
            retry_delays=self._backoff,
            windows=FoldWindows(allow_window_s=config.event_fold_window_s),
        )
        self.runner: InProcessRunner | WorkerPool = (
            InProcessRunner(config, self.store, self.buffer)
            if config.workers == 0
            else WorkerPool(config, self.store, self.buffer, config.workers)
        )
        self.admin = AdminServer(
            {
                "/livez": self._livez,
                "/readyz": self._readyz,
                "/metrics": self._metrics,
                "/diagnostics/decision": self._diagnostics,
            }
        )
        self.listen_port = 0
        self.admin_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._reload = asyncio.Event()

    def _backoff(self) -> Iterator[float]:
        initial = self.config.backoff_initial_s
        return backoff(
            initial_delay=initial,
            min_delay=min(0.5, initial),
            max_delay=max(initial, self.config.backoff_max_s),
        )

    # --- the policy at start ------------------------------------------------------------

    def _load_initial_policy(self) -> PolicyIndex:
        index = PolicyIndex.empty()
        if self.config.policy_file is not None:
            # A bad file stops the start (exit 2): the operator asked for it.
            loaded = load_policy_file(
                self.config.policy_file,
                self.trust,
                allow_unsigned=self.config.allow_unsigned_policy_file,
                now=time.time(),
            )
            index, self.policy_signed = loaded.index, loaded.signed
            self.policy_source = f"policy file {self.config.policy_file}" + (
                "" if loaded.signed else " (UNSIGNED)"
            )
            if self.journal is not None and loaded.signed:
                self.journal.adopt(loaded.records)
            if not loaded.signed:
                log.warning("enforcing an UNSIGNED policy file (allow_unsigned_policy_file)")
        elif self.journal is not None:
            index = self.journal.load(self.trust)
            self.policy_problem = self.journal.problem
            if not index.loaded:
                if not self.policy_problem:
                    log.warning("no policy yet: every request is blocked until one arrives")
                return index
            self.policy_source, self.policy_signed = "last-known-good", True
        log.info(
            "enforcing policy from %s: cluster %s version %d, %d devices",
            self.policy_source,
            index.cluster_id,
            index.version,
            index.device_count(),
        )
        return index

    # --- running ------------------------------------------------------------------------

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.task_failures.append(name)
                log.exception("background task %s failed", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def start(self) -> None:
        self.listen_port = await self.runner.start()
        await self.check_upstream()
        self.admin_port = await self.admin.start(self.config.admin_host, self.config.admin_port)
        if self.journal is not None:
            self._spawn("policy-journal", self.journal.run())
        self._spawn("reporter", self.reporter.run())
        self._spawn("upstream-check", self._upstream_loop())
        if self.link is not None:
            self._spawn("control-plane-link", self.link.run())
        elif self.config.policy_file is not None:
            self._spawn("policy-file", self._watch_policy_file())
        self._write_runtime_file()
        mode = f"workers: {self.config.workers}" if self.config.workers else "in-process"
        log.info(
            "gateway node %s up: EAS on %s:%d, admin on %s:%d, %s",
            self.config.node_id,
            self.config.listen_host,
            self.listen_port,
            self.config.admin_host,
            self.admin_port,
            mode,
        )

    async def run(self, stop: asyncio.Event) -> int:
        try:
            await self.start()
        except BaseException:
            # Whatever did start (worker processes, listeners) must not outlive us.
            await self.shutdown()
            raise
        await stop.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        grace = self.config.shutdown_grace_s
        log.info("shutting down (grace %.0f s)", grace)
        self.shutting_down = True
        await self.runner.close(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.reporter.close(deadline_s=min(10.0, max(1.0, grace)))
        if self.journal is not None:
            await self.journal.flush()
        if self.client is not None:
            await self.client.aclose()
        (self.config.state_dir / RUNTIME_FILE).unlink(missing_ok=True)
        await self.admin.close()
        log.info("gateway node %s stopped", self.config.node_id)

    def _write_runtime_file(self) -> None:
        data = {
            "pid": os.getpid(),
            "node_id": self.config.node_id,
            "listen_port": self.listen_port,
            "admin_port": self.admin_port,
            "public_url": public_url(self.config, self.listen_port),
            "started_at": datetime.now(UTC).isoformat(),
        }
        atomic_write(self.config.state_dir / RUNTIME_FILE, json.dumps(data).encode() + b"\n")

    # --- air-gapped: the policy file is the control plane -----------------------------------

    def reload_policy_file(self) -> None:
        """Re-read the policy file now (SIGHUP on an air-gapped node)."""
        self._reload.set()

    async def _read_policy_file(self) -> None:
        with collector_paused():  # a whole policy is parsed and indexed (``gc_pause``)
            await self._apply_policy_file()

    async def _apply_policy_file(self) -> None:
        assert self.config.policy_file is not None
        now = time.time()
        try:
            # Reading and verifying a large file takes a while: off the loop. Applying
            # stays on it.
            loaded = await asyncio.to_thread(
                load_policy_file,
                self.config.policy_file,
                self.trust,
                allow_unsigned=self.config.allow_unsigned_policy_file,
                now=now,
            )
        except PolicyFileError as exc:
            # Not applied: the policy in force ages towards the fail mode, loudly.
            self.policy_problem = f"policy file refused: {exc}"
            log.error("%s; keeping the policy in force", self.policy_problem)
            return
        self.policy_problem = ""
        self.policy_signed = loaded.signed
        current, fresh = self.store.current(), loaded.index
        if fresh.cluster_id == current.cluster_id and fresh.version == current.version:
            # Signed: as fresh as its newest issue time. Unsigned: re-reading is the
            # operator vouching for it again.
            self.store.confirm(fresh.confirmed_at)
            return
        # The index was built off the loop with the file. Here, a slice per turn: what
        # an unsigned file changed (the workers are sent only that), then the swap, then
        # the policy taken over is let go.
        if loaded.snapshot is not None:
            previous = await in_turns(
                self.store.apply_snapshot_in_slices(loaded.snapshot, now, fresh)
            )
        else:
            previous = self.store.current()
            self.store.install(fresh)
        log.info("policy file re-read: version %d, %d devices", fresh.version, fresh.device_count())
        release = release_gradually(previous.references())
        del previous, current, fresh, loaded
        await release

    async def _watch_policy_file(self) -> None:
        """An air-gapped node re-reads its policy file every refresh interval (and on
        SIGHUP): the operator's file is its only source, and re-reading it is the
        contact that keeps the policy from expiring."""
        while True:
            wait = self.config.refresh_interval_s or float(
                self.store.current().settings.refresh_interval_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload.wait(), wait)
            self._reload.clear()
            await self._read_policy_file()

    # --- upstream reachability ------------------------------------------------------------

    async def check_upstream(self) -> bool:
        url = urlsplit(self.config.upstream_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        ctx: ssl.SSLContext | None = None
        if url.scheme == "https":
            ctx = ssl_context(self.config.upstream_ca_bundle)
        try:
            async with asyncio.timeout(self.config.upstream_connect_timeout_s):
                _reader, writer = await asyncio.open_connection(url.hostname, port, ssl=ctx)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            error = f"{url.hostname}:{port}: {type(exc).__name__}: {exc}"
            if self.upstream_ok is not False:
                log.warning("upstream unreachable: %s", error)
            self.upstream_ok, self.upstream_error = False, error
            return False
        if self.upstream_ok is False:
            log.info("upstream reachable again")
        self.upstream_ok, self.upstream_error = True, ""
        return True

    async def _upstream_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.upstream_check_interval_s)
            await self.check_upstream()

    # --- state for telemetry (telemetry.NodeState) ----------------------------------------

    def proxy_metrics(self) -> dict[str, Any]:
        if isinstance(self.runner, WorkerPool):
            return merge(self.runner.proxy_metrics_list())
        return self.runner.proxy_metrics()

    def workers_status(self) -> list[dict[str, Any]]:
        return self.runner.status() if self.config.workers else []

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        index = self.store.current()
        fresh = freshness(index, now)
        reasons: list[str] = []
        if self.shutting_down:
            reasons.append("shutting down")
        if fresh.level is Level.MISSING:
            refused = self.trust.rejections
            why = self.policy_problem or (
                f"the last policy input was refused ({refused.last_reason}: {refused.last_detail})"
                if refused.last_at is not None
                else ""
            )
            reasons.append(
                "no policy loaded (every request is blocked)" + (f": {why}" if why else "")
            )
        elif fresh.level is Level.EXPIRED:
            reasons.append(
                f"policy expired: no contact with the control plane for {fresh.age_s:.0f} s "
                f"(max {index.settings.max_policy_age_s} s, fail mode {fresh.fail_mode.value})"
            )
        if self.link_status is not None and self.link_status.fatal:
            reasons.append(self.link_status.fatal_reason)
        if self.upstream_ok is False:
            reasons.append(f"upstream unreachable: {self.upstream_error}")
        reasons.extend(self.runner.problems())
        reasons.extend(f"background task {name} failed" for name in self.task_failures)
        spool = self._spool_body(now)
        # Conditions that do not make the node unready (it keeps proxying) but lose or
        # risk losing something an operator must hear about.
        warnings = [spool["problem"]] if spool["problem"] else []
        if self.reporter.folded_refused:
            warnings.append(
                "the control plane refuses folded access events (it predates them): "
                "upgrade the control plane; the events wait in the spool"
            )
        body: dict[str, Any] = {
            "ready": not reasons,
            "reasons": reasons,
            "warnings": warnings,
            "node_id": self.config.node_id,
            "policy": {
                "source": self.policy_source,
                "signed": self.policy_signed,
                "problem": self.policy_problem,
                "cluster_id": index.cluster_id,
                "version": index.version,
                "devices": index.device_count(),
                "freshness": fresh.level.value,
                "age_s": round(fresh.age_s, 3),
                "fail_mode": fresh.fail_mode.value,
                "enforcement": fresh.enforcement.value,
                # Refused input alone does not make the node unready: it keeps
                # enforcing its last verified policy (the fail mode decides with age).
                "rejections": {
                    "total": self.trust.rejections.total,
                    "by_reason": dict(self.trust.rejections.by_reason),
                },
                "last_rejection": self.trust.last_rejection(now),
                "keys": self.trust.describe(),
                "journal": None if self.journal is None else self.journal.describe(),
            },
            "control_plane": None if self.link_status is None else self._link_body(now),
            "spool": spool,
            "upstream_ok": self.upstream_ok,
            "workers": self.workers_status(),
        }
        return not reasons, body

    def _spool_body(self, now: float) -> dict[str, Any]:
        """The spool's part of /readyz. Evicting (or nearly) does not make the node
        unready: proxying continues, the oldest unsent events are what is lost."""
        reporter = self.reporter
        spool = reporter.spool
        state = spool.state(now)
        problem = ""
        if state == EVICTING:
            problem = (
                f"spool evicting: {spool.evicted_events} unsent access events lost since start "
                f"(spool {100 * spool.fill:.0f}% of {spool.max_bytes} bytes)"
            )
        elif state == NEAR_FULL_STATE:
            problem = (
                f"spool near full: {100 * spool.fill:.0f}% of {spool.max_bytes} bytes; "
                "the oldest unsent access events are evicted at 100%"
            )
        return {
            "events": spool.depth_events,
            "bytes": spool.depth_bytes,
            "max_bytes": spool.max_bytes,
            "fill": round(spool.fill, 4),
            "state": state,
            "problem": problem,
            "oldest_unsent_age_s": _age(spool.oldest_unsent_at, now),
            "evicted_events": spool.evicted_events,
            "last_eviction_age_s": _age(spool.last_evicted_at, now),
            "folding": reporter.folding,
            "folded_events": reporter.folded_events,
            "open_fold_records": reporter.open_records,
            "open_fold_events": reporter.open_events,
        }

    def _link_body(self, now: float) -> dict[str, Any]:
        """The link's part of /readyz. "unresponsive" does not make the node unready:
        it keeps enforcing its policy (the fail mode decides once it is too old), and
        pulling every node out of the load balancer because the control plane froze
        would turn a control-plane outage into a mail outage."""
        status = self.link_status
        assert status is not None
        index = self.store.current()
        unresponsive = status.unresponsive_since is not None
        return {
            "state": status.state.value,
            "up": status.state is State.CONNECTED and not unresponsive,
            "last_error": status.last_error,
            "connects": status.connects,
            "last_contact_age_s": _age(status.last_contact, now),
            "last_pong_age_s": _age(status.last_pong_at, now),
            "unresponsive": unresponsive,
            "problem": (
                f"control plane unresponsive for {now - status.unresponsive_since:.0f} s "
                f"({status.pong_deadline_misses} pong deadlines missed)"
                if status.unresponsive_since is not None
                else ""
            ),
            "pong_deadline_misses": status.pong_deadline_misses,
            "verification": {
                "exact": index.exact,
                "verdict": status.verdict,
                "verdict_version": status.verdict_version,
                "verdict_age_s": _age(status.verdict_at, now),
                "last_verified_version": status.last_verified_version,
                "last_verified_age_s": _age(status.last_verified_at, now),
                "digest_mismatches": status.digest_mismatches,
                "replacements": dict(status.replacements),
            },
        }

    # --- admin routes ---------------------------------------------------------------------

    async def _livez(self, query: Any) -> Response:
        return Response.json(200, {"status": "alive", "node_id": self.config.node_id})

    async def _readyz(self, query: Any) -> Response:
        ready, body = self.readiness()
        return Response.json(200 if ready else 503, body)

    async def _metrics(self, query: Any) -> Response:
        return Response(200, render(self), CONTENT_TYPE)

    async def _diagnostics(self, query: Any) -> Response:
        try:
            answer = explain_device(query, self.store.current())
        except DiagnosticsError as exc:
            return Response.json(400, {"detail": str(exc)})
        answer["node_id"] = self.config.node_id
        answer["workers"] = self.workers_status()
        return Response.json(200, answer)
