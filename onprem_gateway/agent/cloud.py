"""HTTP client of the control plane's gateway routes (API.md, "Gateways").

Every call carries the cluster credential and the node id; failures come back as one of
two typed errors so callers never see httpx: ``CredentialRejected`` (a 401/403 the
control plane marks as its own with ``X-SEG-Credential: rejected``: retrying will not
help) and ``ControlPlaneUnavailable`` (network, timeout, 5xx, 429, an answer that does
not parse, or a 401/403 *without* the mark, which came from a proxy, a WAF or a captive
portal in the path: retry later). Never on the request path.

Policy answers are signed (``seg_contract.signing``): this client returns them as
``SignedPayload`` (body as received, statement and signature from the headers) without
reading them; ``policy_trust`` verifies them before anything parses the body. An answer
without the two headers raises ``SignatureRejected(unsigned)``.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx

from seg_contract.http import (
    CREDENTIAL_REJECTED_HEADER,
    CREDENTIAL_REJECTED_VALUE,
    DELTA_PATH,
    EVENTS_PATH,
    NODE_ID_HEADER,
    POLICY_PATH,
    SIGNING_KEYS_PATH,
)
from seg_contract.signing import SignedPayload

log = logging.getLogger(__name__)

# A snapshot of 100,000 devices is ~40 MB of JSON; refuse anything far beyond that.
MAX_POLICY_BYTES = 256 * 1024 * 1024


class ControlPlaneUnavailable(Exception):
    """The control plane could not answer usefully now; try again later."""


class CredentialRejected(Exception):
    """The control plane refused the cluster credential (unknown, revoked, or not allowed
    here): a 401/403 with its ``X-SEG-Credential: rejected`` mark."""


class SendResult(StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # the control plane refuses this batch for good (4xx): drop it
    FAILED = "failed"  # try again later


@dataclass(frozen=True)
class SnapshotAnswer:
    """The snapshot (200) or the control plane's confirmation that the version asked
    about is current (304, an empty payload); neither verified yet."""

    signed: SignedPayload
    modified: bool


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_bundle))


class ControlPlaneClient:
    def __init__(
        self,
        api_url: str,
        credential: str,
        node_id: str,
        *,
        timeout_s: float = 10.0,
        ca_bundle: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {credential}",
                NODE_ID_HEADER: node_id,
                "User-Agent": "seg-gateway",
            },
            timeout=httpx.Timeout(timeout_s),
            verify=ssl_context(ca_bundle) if api_url.startswith("https") else True,
            transport=transport,
            trust_env=False,  # never route control-plane calls through a stray proxy env
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = await self._client.get(path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise ControlPlaneUnavailable(f"GET {path}: {type(exc).__name__}: {exc}") from None
        _raise_for_auth(response, path)
        return response

    async def credential_rejected(self) -> bool:
        """Whether the control plane itself refuses our credential, asked with one GET of
        the policy route (its 401/403 carry the mark; API Gateway may drop it from a
        WebSocket handshake's answer). Only the status and headers are read: the body
        of a 200 (the whole policy) is never downloaded. Any other outcome, a network
        failure included, is "not rejected": the caller backs off and retries."""
        try:
            request = self._client.build_request("GET", POLICY_PATH)
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.info("credential check failed: %s", type(exc).__name__)
            return False
        try:
            return _rejected_by_us(response)
        finally:
            await response.aclose()

    async def fetch_snapshot(self, etag: str | None = None) -> SnapshotAnswer:
        headers = {"If-None-Match": etag} if etag else {}
        response = await self._get(POLICY_PATH, headers=headers)
        if response.status_code == 304:
            return SnapshotAnswer(SignedPayload.from_headers(response.headers, b""), False)
        _expect(response, 200, POLICY_PATH)
        return SnapshotAnswer(_signed(response, POLICY_PATH), True)

    async def fetch_delta(self, since: int) -> SignedPayload | None:
        """The delta since ``since``; None when it is gone (410: take the snapshot)."""
        response = await self._get(DELTA_PATH, params={"since": str(since)})
        if response.status_code == 410:
            return None
        _expect(response, 200, DELTA_PATH)
        return _signed(response, DELTA_PATH)

    async def fetch_signing_keys(self) -> SignedPayload:
        """The cluster's signed key set (``seg_contract.key_ring``)."""
        response = await self._get(SIGNING_KEYS_PATH)
        _expect(response, 200, SIGNING_KEYS_PATH)
        return _signed(response, SIGNING_KEYS_PATH)

    async def post_events(self, batch_json: bytes) -> SendResult:
        """POST one ``AccessEventBatch`` (already serialised)."""
        try:
            response = await self._client.post(
                EVENTS_PATH, content=batch_json, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            log.info("access events not delivered: %s", type(exc).__name__)
            return SendResult.FAILED
        status = response.status_code
        if 200 <= status < 300:
            return SendResult.DELIVERED
        if status in (401, 403, 408, 429) or status >= 500:
            log.info("access events not delivered: HTTP %d", status)
            return SendResult.FAILED
        log.error(
            "control plane refused an access-event batch for good: HTTP %d %s",
            status,
            response.text[:300],
        )
        return SendResult.REJECTED


def _rejected_by_us(response: httpx.Response) -> bool:
    """A 401/403 with the control plane's own mark (``seg_contract.http``)."""
    return (
        response.status_code in (401, 403)
        and response.headers.get(CREDENTIAL_REJECTED_HEADER, "").strip().lower()
        == CREDENTIAL_REJECTED_VALUE
    )


def _raise_for_auth(response: httpx.Response, path: str) -> None:
    if _rejected_by_us(response):
        raise CredentialRejected(f"{path}: HTTP {response.status_code}")
    if response.status_code in (401, 403):
        raise ControlPlaneUnavailable(
            f"{path}: HTTP {response.status_code} without {CREDENTIAL_REJECTED_HEADER}: "
            "refused by something in the path (a proxy or WAF?), not by the control plane"
        )


def _signed(response: httpx.Response, path: str) -> SignedPayload:
    if len(response.content) > MAX_POLICY_BYTES:
        raise ControlPlaneUnavailable(f"GET {path}: answer larger than allowed")
    return SignedPayload.from_headers(response.headers, response.content)


def _expect(response: httpx.Response, status: int, path: str) -> None:
    if response.status_code != status:
        raise ControlPlaneUnavailable(
            f"{path}: HTTP {response.status_code} {response.text[:200]!r}"
        )
