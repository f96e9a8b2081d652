"""The WebSocket route handlers with API Gateway's event shapes: $connect authenticates
and records, $default answers keepalives and records node state, $disconnect forgets."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from lambdas import resources
from lambdas.adapters.dynamodb_gateway_nodes import DynamoDbGatewayNodes
from lambdas.domain.timefmt import format_instant
from lambdas.handlers import compliance_reader, ws_connect, ws_default, ws_disconnect
from lambdas.settings import load_settings
from lambdas.usecases.clusters import revoke_credentials, rotate_credential
from seg_contract import GatewayKeepalive, PushPong
from seg_contract.digest import to_hex
from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE
from tests.support.events import (
    LambdaContext,
    ws_connect_event,
    ws_disconnect_event,
    ws_message_event,
)

from .conftest import World


def _keepalive(node_id: str = "node-a", version: int = 0, digest: str = "") -> str:
    return GatewayKeepalive(
        node_id=node_id,
        policy_version=version,
        policy_age_s=12.5,
        spool_depth=3,
        gateway_version="1.0.0",
        digest=digest,
    ).model_dump_json()


def test_connect_records_the_connection_under_the_credentials_cluster(world: World) -> None:
    cluster_id, credential = world.cluster()
    assert world.connect(credential, "node-a", "conn-a") == {"statusCode": 200}
    connection = world.connections.get("conn-a")
    assert connection is not None
    assert (connection.cluster_id, connection.node_id) == (cluster_id, "node-a")
    assert connection.connected_at == world.clock.now
    assert [c.connection_id for c in world.connections.list_for_cluster(cluster_id)] == ["conn-a"]


def test_connect_takes_the_node_id_from_the_query_and_headers_in_any_case(world: World) -> None:
    _, credential = world.cluster()
    event = ws_connect_event(
        "conn-q", {"authorization": f"bearer {credential}"}, query={"node_id": "node-q"}
    )
    assert ws_connect.handler(event, LambdaContext()) == {"statusCode": 200}
    connection = world.connections.get("conn-q")
    assert connection is not None and connection.node_id == "node-q"


def test_connect_refuses_missing_malformed_and_unknown_credentials(world: World) -> None:
    cluster_id, credential = world.cluster()
    wrong_secret = credential[: credential.rindex("_") + 1] + "x" * 43
    cases = [
        ({}, 401),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ({"Authorization": "Bearer not-a-credential"}, 401),
        ({"Authorization": f"Bearer {wrong_secret}"}, 401),
        ({"Authorization": f"Bearer {credential.replace(cluster_id, 'c-0000000000')}"}, 401),
    ]
    for i, (headers, status) in enumerate(cases):
        event = ws_connect_event(f"conn-{i}", {**headers, "X-SEG-Node-Id": "node-a"})
        response = ws_connect.handler(event, LambdaContext())
        assert response["statusCode"] == status, headers
        assert response["body"]
        assert response["headers"] == {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE}
    assert world.connections.list_for_cluster(cluster_id) == []


def test_connect_refuses_a_revoked_credential_and_a_bad_node_id(world: World) -> None:
    cluster_id, credential = world.cluster()
    fresh = rotate_credential(
        cluster_id, clusters=world.clusters, credentials=world.credentials, now=world.clock()
    )
    old_key = credential.split("_")[2]
    revoke_credentials(
        cluster_id,
        old_key,
        clusters=world.clusters,
        credentials=world.credentials,
        connections=world.connections,
        poster=None,
        signing=world.signing,
        now=world.clock(),
    )
    assert world.connect(credential, "node-a", "conn-old") == {
        "statusCode": 403,
        "headers": {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE},
        "body": "gateway credential revoked",
    }
    bad_node = world.connect(fresh.token, "bad node!", "conn-x")
    assert bad_node["statusCode"] == 400 and "node id" in bad_node["body"]
    assert "headers" not in bad_node  # not a refused credential
    no_node = ws_connect.handler(
        ws_connect_event("conn-y", {"Authorization": f"Bearer {fresh.token}"}), LambdaContext()
    )
    assert no_node["statusCode"] == 400
    assert world.connect(fresh.token, "node-a", "conn-new") == {"statusCode": 200}
    assert [c.connection_id for c in world.connections.list_for_cluster(cluster_id)] == ["conn-new"]


def test_connect_refuses_a_malformed_event(world: World) -> None:
    response = ws_connect.handler({"headers": {}, "requestContext": {}}, LambdaContext())
    assert response["statusCode"] == 400


def test_keepalive_records_node_state_and_answers_with_the_cluster_version(
    world: World,
) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # cluster version 1

    response = ws_default.handler(
        ws_message_event("conn-a", _keepalive(version=1)), LambdaContext()
    )
    assert response == {"statusCode": 200}
    pong = PushPong.model_validate(world.posted("conn-a")[-1])
    assert (pong.cluster_id, pong.version) == (cluster_id, 1)
    assert pong.server_time == world.clock.now

    nodes = DynamoDbGatewayNodes(world.aws.settings.table("gateway_nodes"), world.aws.dynamodb)
    (node,) = nodes.list_nodes(cluster_id)
    assert (node.node_id, node.policy_version, node.policy_age_s, node.spool_depth) == (
        "node-a",
        1,
        12.5,
        3,
    )
    assert node.gateway_version == "1.0.0"


def test_keepalive_checks_the_digest_and_records_the_verdict(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.enroll("mdm-1", "alice", "dev1")
    world.drain()  # version 1
    cluster = world.clusters.get_cluster(cluster_id)
    assert cluster is not None
    ours, other = to_hex(cluster.watermark.digest), to_hex(cluster.watermark.digest + 1)
    nodes = DynamoDbGatewayNodes(world.aws.settings.table("gateway_nodes"), world.aws.dynamodb)
    verified_at = format_instant(world.clock.now + timedelta(seconds=30))  # the first one
    for body, verdict, mismatches in [
        (_keepalive(version=1, digest=ours), "in_sync", 0),
        (_keepalive(version=1, digest=other), "diverged", 1),
        (_keepalive(version=1), "unchecked", 1),
        (_keepalive(version=0, digest=other), "diverged", 2),  # version 0's is kept too
    ]:
        world.clock.advance(seconds=30)
        assert ws_default.handler(ws_message_event("conn-a", body), LambdaContext()) == {
            "statusCode": 200
        }
        pong = PushPong.model_validate(world.posted("conn-a")[-1])
        assert (pong.version, pong.digest_check) == (1, verdict)
        (node,) = nodes.list_nodes(cluster_id)
        assert (node.digest_check, node.digest_mismatches) == (verdict, mismatches)
        assert node.last_verified_at == verified_at


def test_a_base64_encoded_keepalive_is_accepted(world: World) -> None:
    _, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    event = ws_message_event("conn-a", base64.b64encode(_keepalive().encode()).decode())
    event["isBase64Encoded"] = True
    assert ws_default.handler(event, LambdaContext()) == {"statusCode": 200}
    assert world.posted("conn-a")[-1]["type"] == "pong"


def test_bad_keepalives_are_refused_with_a_reason(world: World) -> None:
    _, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    cases = [
        ("not json", 400, "invalid gateway message"),
        ('{"action":"subscribe"}', 400, "invalid gateway message"),
        (_keepalive()[:-1] + ',"extra":1}', 400, "invalid gateway message"),
        (_keepalive(node_id="node-b"), 400, "this connection is node 'node-a'"),
        ("", 400, "empty message"),
    ]
    for body, status, detail in cases:
        response = ws_default.handler(ws_message_event("conn-a", body), LambdaContext())
        assert response["statusCode"] == status, body
        assert detail in response["body"]
    assert world.posted("conn-a") == []


def test_keepalive_on_an_unknown_connection_is_refused_and_closed(world: World) -> None:
    world.cluster()
    response = ws_default.handler(ws_message_event("conn-ghost", _keepalive()), LambdaContext())
    assert response == {"statusCode": 403, "body": "unknown connection: reconnect"}


def test_disconnect_forgets_the_connection_and_is_idempotent(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    world.connect(credential, "node-b", "conn-b")
    for _ in range(2):
        response = ws_disconnect.handler(ws_disconnect_event("conn-a"), LambdaContext())
        assert response == {"statusCode": 200}
    assert [c.node_id for c in world.connections.list_for_cluster(cluster_id)] == ["node-b"]
    assert ws_disconnect.handler({"requestContext": {}}, LambdaContext())["statusCode"] == 400


def test_connection_expiry_is_set_beyond_api_gateways_two_hours(world: World) -> None:
    _, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    item = world.aws.dynamodb.get_item(
        TableName=world.aws.settings.table("connections"),
        Key={"connection_id": {"S": "conn-a"}},
    )["Item"]
    expires = datetime.fromtimestamp(int(item["expires_at"]["N"]), UTC)
    assert 2 * 3600 < (expires - world.clock.now).total_seconds() <= 3 * 3600


def test_a_node_reporting_refused_policy_is_recorded_as_an_alert(world: World) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    keepalive = GatewayKeepalive(
        node_id="node-a",
        policy_version=0,
        policy_age_s=1.0,
        spool_depth=0,
        policy_rejections=2,
        last_rejection="bad_signature",
        last_rejection_age_s=30.0,
    )
    response = ws_default.handler(
        ws_message_event("conn-a", keepalive.model_dump_json()), LambdaContext()
    )
    assert response == {"statusCode": 200}
    nodes = DynamoDbGatewayNodes(world.aws.settings.table("gateway_nodes"), world.aws.dynamodb)
    (node,) = nodes.list_nodes(cluster_id)
    assert (node.policy_rejections, node.last_rejection) == (2, "bad_signature")
    assert node.last_rejection_at == format_instant(world.clock.now - timedelta(seconds=30))
    # A node restarted since reports none: the alert goes with it.
    world.clock.advance(seconds=5)
    ws_default.handler(ws_message_event("conn-a", _keepalive()), LambdaContext())
    (node,) = nodes.list_nodes(cluster_id)
    assert (node.policy_rejections, node.last_rejection, node.last_rejection_at) == (0, "", "")


def use_signing_key(monkeypatch: pytest.MonkeyPatch, key_arn: str) -> None:
    """The functions' signing key from now on (their composition roots are rebuilt)."""
    monkeypatch.setenv(resources.ENV_POLICY_SIGNING_KEY_ARNS, key_arn)
    for cached in (load_settings, compliance_reader.function.root, ws_default.function.root):
        cached.cache_clear()


def test_nothing_is_sent_unsigned_when_kms_cannot_sign(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster_id, credential = world.cluster()
    world.connect(credential, "node-a", "conn-a")
    # A key KMS cannot use (deleted, or the role lost its grant).
    use_signing_key(monkeypatch, "arn:aws:kms:us-east-1:123456789012:key/gone")
    world.enroll("mdm-1", "alice", "dev1")
    assert world.drain() == 1  # the record succeeds: the entry is written
    assert world.entry(cluster_id, "alice", "dev1").version == 1
    response = ws_default.handler(ws_message_event("conn-a", _keepalive()), LambdaContext())
    assert response == {"statusCode": 200}  # the keepalive is recorded, no pong goes out
    assert world.posted_raw("conn-a") == []
    use_signing_key(monkeypatch, world.aws.signing_key_arn)
    ws_default.handler(ws_message_event("conn-a", _keepalive()), LambdaContext())
    (pong,) = world.posted("conn-a")  # the next pong tells the node it is behind
    assert (pong["type"], pong["version"]) == ("pong", 1)
