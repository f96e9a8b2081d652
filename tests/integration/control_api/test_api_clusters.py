"""Console: clusters, credentials (rotate/revoke with pushes), settings, and credential
substitution (PW2 sealed, never returned; PW1 shown once, stored hashed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from lambdas.adapters.dynamodb_connections import DynamoDbConnections
from lambdas.api.deps import connection_poster
from lambdas.composition import Adapters
from lambdas.domain.records import Connection
from lambdas.ports import ConnectionPoster
from lambdas.usecases.policy_changes import CredentialChange, change_credential
from seg_contract import PolicySnapshot, UserCredential
from seg_contract.crypto import generate_cluster_keypair, unseal, verify_device_password
from tests.integration.control_api.conftest import Ctx, register


def connect(ctx: Ctx, cluster_id: str, node: str, key_id: str) -> str:
    connection_id = f"conn-{node}-{key_id}"
    DynamoDbConnections(ctx.aws.tables["connections"], ctx.aws.dynamodb).put(
        Connection(connection_id, cluster_id, node, key_id, datetime(2026, 11, 27, tzinfo=UTC))
    )
    return connection_id


class RecordingPoster:
    """The real management-API poster, recording what it posts (moto forgets a
    connection's data when it is deleted, and revocation deletes connections)."""

    def __init__(self, inner: ConnectionPoster, unwrap: Callable[[dict], dict]) -> None:
        self.inner = inner
        self.unwrap = unwrap  # every push is signed: verified and unwrapped
        self.posted: list[tuple[str, dict]] = []
        self.closed: list[str] = []

    def post(self, connection_id: str, data: bytes) -> None:
        self.inner.post(connection_id, data)
        self.posted.append((connection_id, self.unwrap(json.loads(data))))

    def disconnect(self, connection_id: str) -> None:
        self.inner.disconnect(connection_id)
        self.closed.append(connection_id)


def key_of(credential: str) -> str:
    return credential.split("_")[2]


def test_register_list_and_get_a_cluster(ctx: Ctx) -> None:
    _, public = generate_cluster_keypair()
    cluster_id, credential = register(ctx, "Headquarters", public_key=public)
    assert credential.startswith(f"segc_{cluster_id}_")
    listed = ctx.client.get("/console/v1/clusters", headers=ctx.admin()).json()
    assert [(c["cluster_id"], c["name"]) for c in listed] == [(cluster_id, "Headquarters")]
    detail = ctx.client.get(f"/console/v1/clusters/{cluster_id}", headers=ctx.admin()).json()
    assert detail["public_key"] == public
    assert detail["settings"]["unknown_device_action"] == "block"
    assert [c["key_id"] for c in detail["credentials"]] == [key_of(credential)]
    assert credential not in str(detail)


def test_unknown_clusters_are_404_and_bad_bodies_422(ctx: Ctx) -> None:
    admin = ctx.admin()
    for method, path, body in [
        ("GET", "/console/v1/clusters/c-nope", None),
        ("GET", "/console/v1/clusters/c-nope/nodes", None),
        ("PUT", "/console/v1/clusters/c-nope/settings", {}),
        ("POST", "/console/v1/clusters/c-nope/credentials/rotate", None),
        ("POST", "/console/v1/clusters/c-nope/credentials/revoke", None),
        ("PUT", "/console/v1/clusters/c-nope/substitution/bob", {"upstream_password": "x"}),
    ]:
        response = ctx.client.request(method, path, json=body, headers=admin)
        assert response.status_code == 404, path
        assert "c-nope" in response.json()["detail"]
    cluster_id, _ = register(ctx)
    for method, path, body in [
        ("POST", "/console/v1/clusters", {"name": ""}),
        ("POST", "/console/v1/clusters", {"name": "x", "owner": "me"}),
        ("POST", "/console/v1/clusters", {"name": "x", "public_key": "not-a-key" * 5}),
        ("PUT", f"/console/v1/clusters/{cluster_id}/settings", {"refresh_interval_s": 5}),
        ("PUT", f"/console/v1/clusters/{cluster_id}/settings", {"test_mod": True}),
        ("PUT", f"/console/v1/clusters/{cluster_id}/public-key", {"public_key": "A" * 44}),
        ("GET", "/console/v1/clusters/Not_An_Id", None),
        ("POST", f"/console/v1/clusters/{cluster_id}/credentials/revoke", {"key": "k"}),
        (
            "PUT",
            f"/console/v1/clusters/{cluster_id}/public-key",
            {"public_key": "A" * 43 + "=", "algorithm": "x25519"},
        ),
    ]:
        response = ctx.client.request(method, path, json=body, headers=admin)
        assert response.status_code == 422, (path, body)


def test_settings_change_is_versioned_and_pushed_to_every_node(ctx: Ctx) -> None:
    cluster_id, credential = register(ctx)
    other_id, other_credential = register(ctx, "other")
    a = connect(ctx, cluster_id, "node-a", key_of(credential))
    b = connect(ctx, cluster_id, "node-b", key_of(credential))
    foreign = connect(ctx, other_id, "node-x", key_of(other_credential))
    response = ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/settings",
        json={"unknown_device_action": "quarantine", "refresh_interval_s": 600},
        headers=ctx.admin(),
    )
    assert response.json() == {"cluster_id": cluster_id, "version": 1}
    for connection in (a, b):
        [push] = ctx.aws.posted(connection)
        assert push["type"] == "change" and push["version"] == 1
        assert push["settings"]["unknown_device_action"] == "quarantine"
    assert ctx.aws.posted(foreign) == []
    nodes = ctx.client.get(f"/console/v1/clusters/{cluster_id}/nodes", headers=ctx.admin())
    assert [(n["node_id"], n["connected"]) for n in nodes.json()] == [
        ("node-a", True),
        ("node-b", True),
    ]


def test_rotate_keeps_the_old_key_until_it_is_revoked(ctx: Ctx) -> None:
    cluster_id, old = register(ctx)
    app = ctx.client.app
    poster = RecordingPoster(app.state.container.poster, ctx.aws.unwrap)  # type: ignore[attr-defined]
    app.dependency_overrides[connection_poster] = lambda: poster  # type: ignore[attr-defined]
    rotated = ctx.client.post(
        f"/console/v1/clusters/{cluster_id}/credentials/rotate", headers=ctx.admin()
    )
    assert rotated.status_code == 201
    new = rotated.json()["credential"]
    for credential in (old, new):
        assert ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential)).status_code == 200
    on_old = connect(ctx, cluster_id, "node-a", key_of(old))
    on_new = connect(ctx, cluster_id, "node-b", key_of(new))
    revoke = ctx.client.post(
        f"/console/v1/clusters/{cluster_id}/credentials/revoke",
        json={"key_id": key_of(old)},
        headers=ctx.admin(),
    )
    assert revoke.json() == {"revoked": [key_of(old)], "disconnected": 1}
    assert poster.posted == [(on_old, {"type": "revoked", "cluster_id": cluster_id})]
    assert poster.closed == [on_old]
    remaining = ctx.client.get(f"/console/v1/clusters/{cluster_id}/nodes", headers=ctx.admin())
    assert [(n["node_id"], n["connected"]) for n in remaining.json()] == [("node-b", True)]
    assert on_new not in poster.closed
    assert ctx.client.get("/gateway/v1/policy", headers=ctx.gw(old)).status_code == 403
    assert ctx.client.get("/gateway/v1/policy", headers=ctx.gw(new)).status_code == 200
    again = ctx.client.post(
        f"/console/v1/clusters/{cluster_id}/credentials/revoke",
        json={"key_id": "ffffffffffff"},
        headers=ctx.admin(),
    )
    assert again.status_code == 404


def test_upstream_password_is_sealed_and_never_returned(ctx: Ctx) -> None:
    private, public = generate_cluster_keypair()
    cluster_id, credential = register(ctx)
    path = f"/console/v1/clusters/{cluster_id}/substitution/EXAMPLE%5CBob"
    pw2 = "Upstream-Secret-42!"
    no_key = ctx.client.put(path, json={"upstream_password": pw2}, headers=ctx.admin())
    assert no_key.status_code == 409 and "public key" in no_key.json()["detail"]
    ctx.client.put(
        f"/console/v1/clusters/{cluster_id}/public-key",
        json={"public_key": public},
        headers=ctx.admin(),
    ).raise_for_status()
    node = connect(ctx, cluster_id, "node-a", key_of(credential))
    stored = ctx.client.put(path, json={"upstream_password": pw2}, headers=ctx.admin())
    assert stored.status_code == 204 and stored.content == b""
    issued = ctx.client.post(
        path + "/device-password", json={"device_id": "ApplF17XK0ABCDE"}, headers=ctx.admin()
    )
    assert issued.status_code == 201
    assert issued.json()["device_id"] == "applf17xk0abcde"
    pw1 = issued.json()["device_password"]
    snapshot = PolicySnapshot.model_validate(
        ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential)).json()
    )
    [entry] = snapshot.credentials
    assert entry.user == "bob" and entry.enabled
    assert unseal(entry.sealed_pw2, private) == pw2
    [bound] = entry.device_passwords
    assert bound.device_id == "applf17xk0abcde" and entry.pw1_hashes == ()
    assert verify_device_password(bound.pw1_hash, pw1)
    pushes = ctx.aws.posted(node)
    assert [(p["type"], len(p["credentials"])) for p in pushes] == [("change", 1), ("change", 1)]
    everything = str(pushes) + snapshot.model_dump_json()
    everything += ctx.client.get(f"/console/v1/clusters/{cluster_id}", headers=ctx.admin()).text
    assert pw2 not in everything and pw1 not in everything
    removed = ctx.client.delete(path, headers=ctx.admin())
    assert removed.status_code == 204
    snapshot = PolicySnapshot.model_validate(
        ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential)).json()
    )
    assert snapshot.credentials[0].enabled is False
    assert snapshot.credentials[0].sealed_pw2 == "" and snapshot.credentials[0].pw1_hashes == ()
    assert snapshot.credentials[0].device_passwords == ()
    assert ctx.client.delete(path, headers=ctx.admin()).status_code == 404


def test_substitution_rejects_bad_bodies_and_order(ctx: Ctx) -> None:
    _, public = generate_cluster_keypair()
    cluster_id, _ = register(ctx, public_key=public)
    path = f"/console/v1/clusters/{cluster_id}/substitution/bob"
    early = ctx.client.post(path + "/device-password", json={"device_id": "d"}, headers=ctx.admin())
    assert early.status_code == 409
    for body in (None, {}, {"device_id": ""}, {"device_id": "d", "extra": 1}):
        response = ctx.client.post(path + "/device-password", json=body, headers=ctx.admin())
        assert response.status_code == 422, body
    for body in ({}, {"upstream_password": ""}, {"upstream_password": "x", "user": "eve"}):
        response = ctx.client.put(path, json=body, headers=ctx.admin())
        assert response.status_code == 422
        assert "upstream_password" in response.json()["detail"] or response.json()["errors"]
    secret = {"upstream_password": "s3cret-value", "extra": 1}
    response = ctx.client.put(path, json=secret, headers=ctx.admin())
    assert response.status_code == 422 and "s3cret-value" not in response.text


def test_a_new_cluster_is_seeded_with_every_device(ctx: Ctx) -> None:
    """A cluster registered after devices exist must not treat them all as unknown:
    registration queues a re-evaluation of the whole tenant into that cluster."""
    cluster_id, _ = register(ctx, "Branch office")
    bodies = [json.loads(m["Body"]) for m in ctx.aws.receive_all("compliance")]
    seeds = [b for b in bodies if b["type"] == "reevaluate_all"]
    assert [(s["cluster_id"], s["reason"]) for s in seeds] == [(cluster_id, "cluster_created")]


def test_device_passwords_are_bound_replaced_revoked_and_legacy_ones_migrated(ctx: Ctx) -> None:
    _, public = generate_cluster_keypair()
    cluster_id, credential = register(ctx, public_key=public)
    path = f"/console/v1/clusters/{cluster_id}/substitution/bob"
    ctx.client.put(path, json={"upstream_password": "pw2"}, headers=ctx.admin()).raise_for_status()

    def issue(device: str) -> str:
        r = ctx.client.post(
            path + "/device-password", json={"device_id": device}, headers=ctx.admin()
        )
        assert r.status_code == 201, r.text
        return str(r.json()["device_password"])

    def held() -> UserCredential:
        snap = ctx.client.get("/gateway/v1/policy", headers=ctx.gw(credential)).json()
        return PolicySnapshot.model_validate(snap).credentials[0]

    first = issue("DEV-A")
    issue("dev-b")
    again = issue("dev-a")  # a new password for the same device replaces its old one
    bound = {d.device_id: d.pw1_hash for d in held().device_passwords}
    assert set(bound) == {"dev-a", "dev-b"}
    assert verify_device_password(bound["dev-a"], again)
    assert not verify_device_password(bound["dev-a"], first)

    gone = ctx.client.delete(path + "/device-password/DEV-B", headers=ctx.admin())
    assert gone.status_code == 204
    assert [d.device_id for d in held().device_passwords] == ["dev-a"]
    assert (
        ctx.client.delete(path + "/device-password/dev-b", headers=ctx.admin()).status_code == 404
    )

    # A record written before passwords were bound: its hashes work from any device until
    # the admin migrates (removes them); that is refused when there are none.
    before = held()
    adapters = Adapters(ctx.aws.settings, dynamodb=ctx.aws.dynamodb, apigw=ctx.aws.apigw)
    change_credential(  # how records were written before passwords were bound
        cluster_id,
        "bob",
        lambda held: CredentialChange(
            ("scrypt$legacy",), before.sealed_pw2, before.device_passwords
        ),
        stores=adapters.versions,
        now=datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert held().pw1_hashes == ("scrypt$legacy",)
    migrated = ctx.client.delete(path + "/unbound-device-passwords", headers=ctx.admin())
    assert migrated.status_code == 204
    after = held()
    assert after.pw1_hashes == () and [d.device_id for d in after.device_passwords] == ["dev-a"]
    again_missing = ctx.client.delete(path + "/unbound-device-passwords", headers=ctx.admin())
    assert again_missing.status_code == 404
