"""Whose 401/403 is it: the control plane's (marked ``X-SEG-Credential: rejected``) or
something's in the path (a proxy or WAF); signed answers as received. httpx's
MockTransport: no sockets."""

from __future__ import annotations

import httpx
import pytest

from onprem_gateway.agent.cloud import (
    ControlPlaneClient,
    ControlPlaneUnavailable,
    CredentialRejected,
    SendResult,
)
from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE
from seg_contract.signing import RejectReason, SignatureRejected
from tests.unit.gateway_agent.helpers import signed_confirm, signed_snapshot, snapshot

MARK = {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE}


def client(status: int, headers: dict[str, str] | None = None) -> ControlPlaneClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers or {}, json={"detail": "no"})

    return ControlPlaneClient(
        "https://cp.example.com", "segc_x", "n1", transport=httpx.MockTransport(answer)
    )


@pytest.mark.parametrize("status", [401, 403])
async def test_a_marked_refusal_is_the_credential_rejected(status: int) -> None:
    with pytest.raises(CredentialRejected):
        await client(status, MARK).fetch_snapshot()
    with pytest.raises(CredentialRejected):
        await client(status, {CREDENTIAL_REJECTED_HEADER: " Rejected "}).fetch_delta(3)
    assert await client(status, MARK).credential_rejected() is True


@pytest.mark.parametrize("status", [401, 403])
async def test_an_unmarked_refusal_is_something_in_the_path_and_retried(status: int) -> None:
    with pytest.raises(ControlPlaneUnavailable, match="proxy or WAF"):
        await client(status).fetch_snapshot()
    with pytest.raises(ControlPlaneUnavailable):
        await client(status, {CREDENTIAL_REJECTED_HEADER: "maybe"}).fetch_delta(3)
    assert await client(status).credential_rejected() is False
    assert await client(status, MARK).post_events(b"{}") is SendResult.FAILED


async def test_the_credential_check_says_not_rejected_for_any_other_answer() -> None:
    assert await client(200).credential_rejected() is False
    assert await client(503, MARK).credential_rejected() is False

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    down = ControlPlaneClient(
        "https://cp.example.com", "k", "n1", transport=httpx.MockTransport(unreachable)
    )
    assert await down.credential_rejected() is False


async def test_policy_answers_come_back_as_received_with_their_signature() -> None:
    signed = signed_snapshot(snapshot(), 1000.0)
    confirm = signed_confirm(2, 1000.0)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("If-None-Match"):
            return httpx.Response(304, headers=confirm.headers())
        return httpx.Response(200, headers=signed.headers(), content=signed.payload)

    cp = ControlPlaneClient(
        "https://cp.example.com", "segc_x", "n1", transport=httpx.MockTransport(answer)
    )
    got = await cp.fetch_snapshot()
    assert got.modified and got.signed == signed
    not_modified = await cp.fetch_snapshot('"c1-2"')
    assert not not_modified.modified and not_modified.signed == confirm


async def test_a_policy_answer_without_a_signature_is_unsigned() -> None:
    with pytest.raises(SignatureRejected) as caught:
        await client(200).fetch_snapshot()
    assert caught.value.reason is RejectReason.UNSIGNED
    with pytest.raises(SignatureRejected):
        await client(200).fetch_delta(1)
    with pytest.raises(SignatureRejected):
        await client(200).fetch_signing_keys()
