"""The synthesized CDK template, deployed into ministack and driven like the seed's flows.

What this proves that synth assertions cannot: CloudFormation accepts the template and
its assets; the functions start from the bundle with the environment the stack gives
them; the JWT authorizer guards the console; $connect/$default/@connections work through
the WebSocket API; the SQS event sources deliver to the readers; the flows close:
enrollment -> compliance queue -> reader -> push to the connected gateway, and access
event -> payload queue -> reader -> dashboard view.

ministack (pinned, own venv) runs the Lambda code as local Python subprocesses on this
machine's interpreter, so the stack is synthesized with ``bundle_target=host`` (wheels
for this CPU) and ``execute_api_base_url`` pointing at the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from cdk.app import STACK_NAME
from lambdas import resources
from seg_contract.http import SIGNING_KEYS_PATH
from seg_contract.key_ring import KeyRing
from seg_contract.signing import (
    Applied,
    Kind,
    SignedMessage,
    SignedPayload,
    TrustedKey,
    Verifier,
)
from tests.e2e.control_plane_ministack import ministack
from tests.infra.synth import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ADMIN = "admin"
ADMIN_PASSWORD = "Correct-Horse-Battery-9!"


@dataclass
class Deployed:
    emulator: ministack.Ministack
    outputs: dict[str, str]
    template: dict[str, Any]
    http_base: str
    admin_token: str
    device_services_key: str
    function_names: dict[str, str]  # declaration id -> deployed function name


def _totp(secret: str, at: float) -> str:
    """RFC 6238 code (SHA-1, 30 s, 6 digits): what an authenticator app shows."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def _admin_token(emulator: ministack.Ministack, pool_id: str, client_id: str) -> str:
    """Create the console admin as the README says, then sign in (with the TOTP setup
    challenge when the emulator enforces MFA)."""
    cognito = emulator.client("cognito-idp")
    cognito.admin_create_user(
        UserPoolId=pool_id,
        Username=ADMIN,
        UserAttributes=[
            {"Name": "email", "Value": "admin@example.com"},
            {"Name": "email_verified", "Value": "true"},
        ],
        TemporaryPassword="Temporary-Passw0rd-1!",
        MessageAction="SUPPRESS",
    )
    cognito.admin_set_user_password(
        UserPoolId=pool_id, Username=ADMIN, Password=ADMIN_PASSWORD, Permanent=True
    )
    # The console's role comes from the pool's groups (README): this user is an admin.
    cognito.admin_add_user_to_group(UserPoolId=pool_id, Username=ADMIN, GroupName="admin")
    answer = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": ADMIN, "PASSWORD": ADMIN_PASSWORD},
    )
    if answer.get("ChallengeName") == "MFA_SETUP":
        setup = cognito.associate_software_token(Session=answer["Session"])
        verified = cognito.verify_software_token(
            Session=setup["Session"], UserCode=_totp(setup["SecretCode"], time.time())
        )
        answer = cognito.respond_to_auth_challenge(
            ClientId=client_id,
            ChallengeName="MFA_SETUP",
            Session=verified["Session"],
            ChallengeResponses={"USERNAME": ADMIN},
        )
    return str(answer["AuthenticationResult"]["IdToken"])


def _work_around_secret_ref(
    emulator: ministack.Ministack, outputs: dict[str, str], api_role_logical_id: str
) -> None:
    """ministack 1.5.33 resolves ``Ref`` of an AWS::SecretsManager::Secret to the
    secret's name; CloudFormation returns its ARN. The api role's grant (made on the Ref)
    therefore names no ARN and IAM enforcement denies GetSecretValue. Re-grant exactly
    the same two actions on the real ARN, only while the emulator has this bug."""
    if outputs["DeviceServicesSecretArn"].startswith("arn:"):
        return
    arn = emulator.client("secretsmanager").describe_secret(
        SecretId=outputs["DeviceServicesSecretArn"]
    )["ARN"]
    role = emulator.client("cloudformation").describe_stack_resource(
        StackName=STACK_NAME, LogicalResourceId=api_role_logical_id
    )["StackResourceDetail"]["PhysicalResourceId"]
    emulator.client("iam").put_role_policy(
        RoleName=role,
        PolicyName="ministack-secret-ref-workaround",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "secretsmanager:GetSecretValue",
                            "secretsmanager:DescribeSecret",
                        ],
                        "Resource": arn,
                    }
                ],
            }
        ),
    )


def _without_tls_only_queue_policies(template: dict[str, Any]) -> dict[str, Any]:
    """The template to deploy into ministack: the synthesized one minus the queue
    policies, after checking that denying calls without TLS (enforceSSL) is all they
    say. ministack serves plain HTTP on loopback (its TLS mode breaks its own JWT
    authorizer, whose JWKS fetch is hard-wired to http), so with IAM enforced those
    policies would deny every call, even root's. Identity policies stay enforced."""
    kept = dict(template)
    kept["Resources"] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::SQS::QueuePolicy":
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Deny", statement
                assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            continue
        kept["Resources"][logical_id] = resource
    return kept


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    workdir: Path = tmp_path_factory.mktemp("ministack")
    with ministack.running_ministack(workdir) as emulator:
        synthesized = synthesize(
            workdir / "cdk.out",
            bundle_target="host",
            retain_data="false",
            execute_api_base_url=emulator.execute_api_base_url,
        )
        ministack.publish_assets(emulator, synthesized.outdir, STACK_NAME, workdir)
        deployed_template = _without_tls_only_queue_policies(synthesized.json)
        outputs = ministack.deploy(emulator, deployed_template, STACK_NAME)
        _work_around_secret_ref(
            emulator,
            outputs,
            synthesized.logical_id(synthesized.stack.functions.functions["api"].role),
        )
        cfn = emulator.client("cloudformation")
        function_names = {
            declared.id: cfn.describe_stack_resource(
                StackName=STACK_NAME,
                LogicalResourceId=synthesized.logical_id(
                    synthesized.stack.functions.functions[declared.id]
                ),
            )["StackResourceDetail"]["PhysicalResourceId"]
            for declared in resources.FUNCTIONS
        }
        http_api_id = outputs["HttpApiUrl"].split("//", 1)[1].split(".", 1)[0]
        secret = emulator.client("secretsmanager").get_secret_value(
            SecretId=outputs["DeviceServicesSecretArn"]
        )
        yield Deployed(
            emulator=emulator,
            outputs=outputs,
            template=deployed_template,
            http_base=f"{emulator.endpoint}/_aws/execute-api/{http_api_id}/$default",
            admin_token=_admin_token(emulator, outputs["UserPoolId"], outputs["UserPoolClientId"]),
            device_services_key=secret["SecretString"],
            function_names=function_names,
        )


@pytest.fixture
async def http(deployed: Deployed) -> AsyncIterator[httpx.AsyncClient]:
    # A cold Lambda worker imports FastAPI, boto3 and powertools: allow for it.
    async with httpx.AsyncClient(base_url=deployed.http_base, timeout=90) as client:
        yield client


def _admin(deployed: Deployed) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployed.admin_token}"}


async def _new_cluster(http: httpx.AsyncClient, deployed: Deployed, name: str) -> dict[str, str]:
    created = await http.post("/console/v1/clusters", json={"name": name}, headers=_admin(deployed))
    assert created.status_code == 201, created.text
    return dict(created.json())


def _gateway_headers(credential: str, node_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", "X-SEG-Node-Id": node_id}


def _stack_key(deployed: Deployed) -> TrustedKey:
    """The stack's policy signing key, as a node pins it."""
    (arn,) = deployed.outputs["PolicySigningKeyArns"].split(",")
    return TrustedKey.from_der(
        deployed.emulator.client("kms").get_public_key(KeyId=arn)["PublicKey"]
    )


async def _receive_until(
    ws: ClientConnection, wanted: str, timeout_s: float, *, key: TrustedKey, cluster_id: str
) -> dict[str, Any]:
    """The next push of type ``wanted``: every frame must be a ``signed`` envelope that
    verifies with the stack's key (the deployed function signed it through KMS)."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {wanted} push within {timeout_s} s")
        frame = await asyncio.wait_for(ws.recv(), remaining)
        signed = SignedPayload.from_envelope(SignedMessage.model_validate_json(frame))
        message = json.loads(signed.payload)
        verified = Verifier([key]).verify(
            signed,
            cluster_id=cluster_id,
            kinds=Kind(message["type"]),
            applied=Applied(),
            now_ms=int(time.time() * 1000),
        )
        assert verified.statement.kid == key.kid
        if message.get("type") == wanted:
            return dict(message)


def test_every_template_resource_was_created(deployed: Deployed) -> None:
    cfn = deployed.emulator.client("cloudformation")
    pages = cfn.get_paginator("list_stack_resources").paginate(StackName=STACK_NAME)
    created = [r for page in pages for r in page["StackResourceSummaries"]]
    statuses = {r["LogicalResourceId"]: r["ResourceStatus"] for r in created}
    declared = {
        k for k, v in deployed.template["Resources"].items() if v["Type"] != "AWS::CDK::Metadata"
    }
    assert declared <= set(statuses)
    assert {statuses[k] for k in declared} == {"CREATE_COMPLETE"}
    mappings = deployed.emulator.client("lambda").list_event_source_mappings()[
        "EventSourceMappings"
    ]
    readers = [f for f in resources.FUNCTIONS if f.trigger is resources.Trigger.SQS]
    assert len(mappings) == len(readers)
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)


async def test_health_is_public_and_the_console_needs_a_cognito_token(
    http: httpx.AsyncClient, deployed: Deployed
) -> None:
    health = await http.get("/health")
    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok"}
    anonymous = await http.get("/console/v1/whoami")
    assert anonymous.status_code == 401  # refused by API Gateway's JWT authorizer
    forged = await http.get("/console/v1/whoami", headers={"Authorization": "Bearer a.b.c"})
    assert forged.status_code == 401
    # The dashboard page: /console redirects to /console/, which only $default can route.
    page = await http.get("/console", follow_redirects=True)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    signed_in = await http.get("/console/v1/whoami", headers=_admin(deployed))
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["subject"]


async def test_websocket_connect_refuses_an_unknown_credential(deployed: Deployed) -> None:
    bogus = "segc_c-0000000000_000000000000_" + "x" * 43
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(
            deployed.outputs["WebSocketUrl"],
            additional_headers=_gateway_headers(bogus, "n1"),
            open_timeout=90,
        ):
            pass
    assert refused.value.response.status_code in {401, 403}


async def test_enrollment_pushes_a_device_update_to_the_connected_gateway(
    http: httpx.AsyncClient, deployed: Deployed
) -> None:
    cluster = await _new_cluster(http, deployed, "enrollment")
    async with websockets.connect(
        deployed.outputs["WebSocketUrl"],
        additional_headers=_gateway_headers(cluster["credential"], "node-a"),
        open_timeout=90,
    ) as ws:
        # $default -> ws_default -> @connections: the keepalive is answered.
        await ws.send(
            json.dumps(
                {
                    "action": "keepalive",
                    "node_id": "node-a",
                    "policy_version": 0,
                    "policy_age_s": 0,
                    "spool_depth": 0,
                }
            )
        )
        key = _stack_key(deployed)
        pong = await _receive_until(ws, "pong", 90, key=key, cluster_id=cluster["cluster_id"])
        assert pong["cluster_id"] == cluster["cluster_id"]

        enrollment = {
            "type": "enrollment",
            "event_id": uuid.uuid4().hex,
            "occurred_at": datetime.now(UTC).isoformat(),
            "mdm_device_id": "mdm-enroll-1",
            "user": "alice@example.com",
            "eas_device_ids": ["ENROLL0001"],
            "platform": "iOS",
            "model": "iPhone15,2",
            "os_version": "17.4",
            "managed": True,
        }
        posted = await http.post(
            "/mdm/v1/events",
            json=enrollment,
            headers={"Authorization": f"Bearer {deployed.device_services_key}"},
        )
        assert posted.status_code == 202, posted.text
        # compliance queue (FIFO) -> compliance_reader -> policy entry -> push.
        update = await _receive_until(ws, "change", 120, key=key, cluster_id=cluster["cluster_id"])
    assert update["cluster_id"] == cluster["cluster_id"]
    assert update["devices"][0]["device_id"].lower() == "enroll0001"
    assert update["version"] >= 1
    # The snapshot that holds it is signed by the same key (the api function's grant).
    snapshot = await http.get(
        "/gateway/v1/policy", headers=_gateway_headers(cluster["credential"], "node-b")
    )
    assert snapshot.status_code == 200, snapshot.text
    verified = Verifier([key]).verify(
        SignedPayload.from_headers(snapshot.headers, snapshot.content),
        cluster_id=cluster["cluster_id"],
        kinds=Kind.SNAPSHOT,
        applied=Applied(),
        now_ms=int(time.time() * 1000),
    )
    assert verified.statement.version >= update["version"]


async def test_an_access_event_lands_in_the_dashboard_view(
    http: httpx.AsyncClient, deployed: Deployed
) -> None:
    cluster = await _new_cluster(http, deployed, "access")
    batch = {
        "node_id": "node-b",
        "events": [
            {
                "event_id": uuid.uuid4().hex,
                "at": datetime.now(UTC).isoformat(),
                "node_id": "node-b",
                "user": "bob@example.com",
                "device_id": "ACCESS0001",
                "device_type": "iPhone",
                "user_agent": "Apple-iPhone15C2/2104.1",
                "command": "Sync",
                "decision": "block",
                "reason": "device not enrolled",
            }
        ],
    }
    accepted = await http.post(
        "/gateway/v1/access-events",
        json=batch,
        headers=_gateway_headers(cluster["credential"], "node-b"),
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"accepted": 1}
    # payload queue -> payload_reader (SQS event source) -> email_devices table.
    deadline = time.monotonic() + 120
    while True:
        page = await http.get(
            "/console/v1/email-devices", params={"q": "bob"}, headers=_admin(deployed)
        )
        assert page.status_code == 200, page.text
        items = [i for i in page.json()["items"] if i["device_id"].lower() == "access0001"]
        if items:
            break
        assert time.monotonic() < deadline, "the access event never reached the dashboard"
        await asyncio.sleep(1)
    (row,) = items
    assert row["access_state"] == "block"
    assert row["last_node"] == "node-b"
    assert row["cluster_id"] == cluster["cluster_id"]


def test_iam_is_enforced_by_the_emulator(deployed: Deployed) -> None:
    """Without this, the flows above would prove nothing about the grants."""
    iam = deployed.emulator.client("iam")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=deployed.emulator.endpoint,
        region_name=ministack.REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        dynamodb.list_tables()
    assert "AccessDenied" in str(denied.value)


def test_scheduled_checkin_runs_on_its_schedule_within_its_grants(deployed: Deployed) -> None:
    name = deployed.function_names["scheduled_checkin"]
    events = deployed.emulator.client("events")
    (rule,) = events.list_rule_names_by_target(
        TargetArn=deployed.emulator.client("lambda").get_function(FunctionName=name)[
            "Configuration"
        ]["FunctionArn"]
    )["RuleNames"]
    assert events.describe_rule(Name=rule)["ScheduleExpression"] == "rate(15 minutes)"
    # What EventBridge sends; the sweep reads devices/clusters and queues stale ones.
    answer = deployed.emulator.client("lambda").invoke(
        FunctionName=name,
        Payload=json.dumps(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ministack.ACCOUNT,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": ministack.REGION,
                "resources": [],
                "detail": {},
            }
        ).encode(),
    )
    payload = answer["Payload"].read().decode()
    assert "FunctionError" not in answer, payload


async def test_the_api_signs_with_the_stacks_kms_key_under_its_own_role(
    http: httpx.AsyncClient, deployed: Deployed
) -> None:
    """The deployed api function reads the key from its environment, and its role's
    kms:Sign / kms:GetPublicKey grant (IAM enforced) is enough to sign the key set that
    gateways learn keys from; the key printed for pinning verifies it."""
    cluster = await _new_cluster(http, deployed, "signing")
    answer = await http.get(
        SIGNING_KEYS_PATH, headers=_gateway_headers(cluster["credential"], "node-a")
    )
    assert answer.status_code == 200, answer.text
    (arn,) = deployed.outputs["PolicySigningKeyArns"].split(",")
    public = deployed.emulator.client("kms").get_public_key(KeyId=arn)["PublicKey"]
    pinned = TrustedKey.from_der(public)
    listed = await http.get("/console/v1/signing-keys", headers=_admin(deployed))
    assert listed.status_code == 200, listed.text
    assert listed.json()["trusted"] == [pinned.spki_b64]
    ring, verified = KeyRing(pinned=(pinned,)).learn(
        SignedPayload.from_headers(answer.headers, answer.content),
        cluster_id=cluster["cluster_id"],
        now_ms=int(time.time() * 1000),
    )
    assert verified.statement.kid == pinned.kid
    assert [k.kid for k in ring.learned] == [pinned.kid]
