"""A DeviceId is chosen by the client and may contain "/": the console routes that take
one in their path must still reach it (the dashboard sends it percent-encoded)."""

from __future__ import annotations

import json

from tests.integration.control_api.conftest import Ctx


def test_an_override_reaches_a_device_id_with_a_slash(ctx: Ctx) -> None:
    response = ctx.client.post(
        "/console/v1/email-devices/bob/ab%2Fcd/override",
        json={"action": "block", "reason": "lost"},
        headers=ctx.admin(),
    )
    assert (response.status_code, response.json()) == (202, {"status": "queued"})
    bodies = [json.loads(m["Body"]) for m in ctx.aws.receive_all("compliance")]
    [override] = [b for b in bodies if b["type"] == "manual_override"]
    assert (override["user"], override["device_id"]) == ("bob", "ab/cd")


def test_the_detail_of_an_unknown_device_id_with_a_slash_is_404(ctx: Ctx) -> None:
    response = ctx.client.get("/console/v1/email-devices/bob/ab%2Fcd", headers=ctx.admin())
    assert response.status_code == 404
    assert "detail" in response.json()
