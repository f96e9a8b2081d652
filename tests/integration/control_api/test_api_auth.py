"""Each kind of caller only on its own routes; wrong or missing credentials get a clear
401/403 with a reason."""

from __future__ import annotations

import pytest

from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE
from tests.integration.control_api.conftest import Ctx, enrollment, register

MDM_ROUTE = ("POST", "/mdm/v1/events")
GATEWAY_ROUTES = [
    ("GET", "/gateway/v1/policy"),
    ("GET", "/gateway/v1/policy/delta?since=0"),
    ("POST", "/gateway/v1/access-events"),
]
CONSOLE_ROUTES = [
    ("GET", "/console/v1/whoami"),
    ("GET", "/console/v1/email-devices"),
    ("GET", "/console/v1/clusters"),
    ("POST", "/console/v1/clusters"),
    ("GET", "/console/v1/compliance-policy"),
]


def call(ctx: Ctx, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    response = ctx.client.request(method, path, headers=headers, json={})
    return response.status_code, response.json()


def test_health_needs_no_credentials(ctx: Ctx) -> None:
    response = ctx.client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_no_credentials_anywhere_is_401_with_a_reason(ctx: Ctx) -> None:
    for method, path in [MDM_ROUTE, *GATEWAY_ROUTES, *CONSOLE_ROUTES]:
        status, body = call(ctx, method, path, {})
        assert status == 401, path
        assert "Authorization" in body["detail"]


@pytest.mark.parametrize("scheme", ["Basic dXNlcjpwdw==", "Bearer", "Token abc"])
def test_malformed_authorization_is_401(ctx: Ctx, scheme: str) -> None:
    status, _ = call(ctx, "GET", "/console/v1/whoami", {"Authorization": scheme})
    assert status == 401


def test_each_kind_is_refused_on_the_others_routes(ctx: Ctx) -> None:
    _, credential = register(ctx)
    gateway = ctx.gw(credential)
    for method, path in [MDM_ROUTE]:
        assert call(ctx, method, path, ctx.admin())[0] == 401
        assert call(ctx, method, path, gateway)[0] == 401
    for method, path in GATEWAY_ROUTES:
        assert call(ctx, method, path, ctx.admin())[0] == 401, path
        assert call(ctx, method, path, ctx.mdm())[0] == 401, path
    for method, path in CONSOLE_ROUTES:
        assert call(ctx, method, path, ctx.mdm())[0] == 401, path
        assert call(ctx, method, path, gateway)[0] == 401, path


def test_wrong_secrets_are_401(ctx: Ctx) -> None:
    _, credential = register(ctx)
    tampered = credential[:-4] + ("aaaa" if not credential.endswith("aaaa") else "bbbb")
    assert call(ctx, "GET", "/gateway/v1/policy", ctx.gw(tampered))[0] == 401
    bad = {"Authorization": "Bearer not-the-key"}
    assert ctx.client.post("/mdm/v1/events", json=enrollment(), headers=bad).status_code == 401
    assert ctx.client.get("/console/v1/whoami", headers=bad).status_code == 401


def test_a_credential_cannot_be_pointed_at_another_cluster(ctx: Ctx) -> None:
    cluster_a, credential_a = register(ctx, "a")
    cluster_b, _ = register(ctx, "b")
    forged = credential_a.replace(f"segc_{cluster_a}_", f"segc_{cluster_b}_", 1)
    response = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(forged))
    assert response.status_code == 401
    own = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential_a))
    assert own.status_code == 200 and own.json()["cluster_id"] == cluster_a


def test_auth_comes_before_body_validation(ctx: Ctx) -> None:
    response = ctx.client.post("/mdm/v1/events", json={"nonsense": 1}, headers=ctx.admin())
    assert response.status_code == 401


def test_whoami_names_the_admin(ctx: Ctx) -> None:
    response = ctx.client.get("/console/v1/whoami", headers=ctx.admin())
    body = response.json()
    assert (body["subject"], body["role"]) == ("admin", "admin")
    assert "cluster.manage" in body["permissions"]


def test_the_dashboard_page_is_mounted_without_auth(ctx: Ctx) -> None:
    page = ctx.client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_a_bad_node_id_header_is_422(ctx: Ctx) -> None:
    _, credential = register(ctx)
    response = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential, node="bad node/1"))
    assert response.status_code == 422 and "node id" in response.json()["detail"]


def _rejected(headers: object) -> bool:
    return headers.get(CREDENTIAL_REJECTED_HEADER) == CREDENTIAL_REJECTED_VALUE  # type: ignore[attr-defined]


def test_our_refusals_of_a_gateway_credential_carry_the_rejected_mark(ctx: Ctx) -> None:
    """A node tells our 401/403 from a proxy's or a WAF's by this header."""
    cluster_id, credential = register(ctx)
    tampered = credential[:-4] + ("aaaa" if not credential.endswith("aaaa") else "bbbb")
    for method, path in GATEWAY_ROUTES:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, ctx.gw(tampered)):
            response = ctx.client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (path, headers)
            assert _rejected(response.headers), (path, headers)
    ctx.client.post(f"/console/v1/clusters/{cluster_id}/credentials/revoke", headers=ctx.admin())
    revoked = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential))
    assert revoked.status_code == 403 and _rejected(revoked.headers)


def test_other_callers_refusals_and_other_errors_carry_no_mark(ctx: Ctx) -> None:
    _, credential = register(ctx)
    for method, path in [MDM_ROUTE, *CONSOLE_ROUTES]:
        response = ctx.client.request(method, path, headers={}, json={})
        assert response.status_code == 401 and not _rejected(response.headers), path
    bad_node = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential, node="bad node/1"))
    assert bad_node.status_code == 422 and not _rejected(bad_node.headers)
