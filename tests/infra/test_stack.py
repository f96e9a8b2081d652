"""What matters in the synthesized control-plane template, checked against the one
definition of resources (``lambdas/resources.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import assertions

from lambdas import resources
from tests.infra.synth import Synthesized

READ_ACTIONS = {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:BatchGetItem"}
WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
}
SEND_ACTIONS = {"sqs:SendMessage"}
CONSUME_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}


def _refs(value: Any) -> set[str]:
    """Logical ids a template value refers to (Ref / Fn::GetAtt), pseudo parameters aside."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and not str(value["Ref"]).startswith("AWS::"):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for inner in value.values():
            found |= _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _refs(inner)
    return found


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement.get("Action", [])
    return set(actions if isinstance(actions, list) else [actions])


def _function_statements(s: Synthesized, function_id: str) -> list[dict[str, Any]]:
    """Every statement of every identity policy attached to this function's role."""
    role_id = s.logical_id(s.stack.functions.functions[function_id].role)
    statements: list[dict[str, Any]] = []
    for policy in s.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += _statements(policy["Properties"]["PolicyDocument"])
    role = s.json["Resources"][role_id]["Properties"]
    for inline in role.get("Policies", []):
        statements += _statements(inline["PolicyDocument"])
    assert not role.get("ManagedPolicyArns"), f"{function_id} has managed policies"
    return statements


def _actions_on(statements: list[dict[str, Any]], logical_id: str) -> set[str]:
    return {
        action
        for statement in statements
        if logical_id in _refs(statement.get("Resource"))
        for action in _actions(statement)
    }


# --- storage ---------------------------------------------------------------------------


def test_every_declared_table_is_on_demand_with_pitr_sse_keys_and_ttl(
    synthesized: Synthesized,
) -> None:
    s = synthesized
    tables = s.resources("AWS::DynamoDB::Table")
    assert len(tables) == len(resources.TABLES)
    for declared in resources.TABLES:
        table = s.json["Resources"][s.logical_id(s.stack.storage.tables[declared.id])]
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert table["DeletionPolicy"] == "Retain"
        keys = {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]}
        expected = {declared.partition.name: "HASH"}
        if declared.sort:
            expected[declared.sort.name] = "RANGE"
        assert keys == expected, declared.id
        indexes = {i["IndexName"] for i in props.get("GlobalSecondaryIndexes", [])}
        assert indexes == {i.name for i in declared.indexes}, declared.id
        ttl = props.get("TimeToLiveSpecification")
        if declared.ttl_attribute:
            assert ttl == {"AttributeName": declared.ttl_attribute, "Enabled": True}
        else:
            assert ttl is None, declared.id


def test_the_policy_log_expires_and_only_committers_and_advancers_may_touch_it(
    synthesized: Synthesized,
) -> None:
    s = synthesized
    log = s.json["Resources"][s.logical_id(s.stack.storage.tables["policy_log"])]["Properties"]
    assert {k["AttributeName"]: k["KeyType"] for k in log["KeySchema"]} == {
        "cluster_id": "HASH",
        "version": "RANGE",
    }
    assert {"AttributeName": "version", "AttributeType": "N"} in log["AttributeDefinitions"]
    assert log["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    # Writers commit versions (API: settings and credentials; the compliance reader; the
    # issuer-keys refresh); readers advance the committed version (API: snapshots and
    # deltas; keepalives).
    granted = {
        f.id: f.tables["policy_log"] for f in resources.FUNCTIONS if "policy_log" in f.tables
    }
    writers = ("api", "compliance_reader", "issuer_keys", "ws_default")
    assert granted == dict.fromkeys(writers, resources.RW)
    entries = s.json["Resources"][s.logical_id(s.stack.storage.tables["policy_entries"])]
    assert "GlobalSecondaryIndexes" not in entries["Properties"]  # deltas read the log


# --- queues ----------------------------------------------------------------------------


def test_every_queue_has_a_dlq_with_redrive_encryption_and_a_depth_alarm(
    synthesized: Synthesized,
) -> None:
    s = synthesized
    alarms = s.resources("AWS::CloudWatch::Alarm").values()
    for declared in resources.QUEUES:
        pair = s.stack.queues.pairs[declared.id]
        queue_id, dlq_id = s.logical_id(pair.queue), s.logical_id(pair.dead_letters)
        queue = s.json["Resources"][queue_id]["Properties"]
        dlq = s.json["Resources"][dlq_id]["Properties"]
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
            "maxReceiveCount": declared.max_receive_count,
        }
        assert queue["VisibilityTimeout"] == declared.visibility_timeout_s
        assert bool(queue.get("FifoQueue")) is declared.fifo
        assert bool(dlq.get("FifoQueue")) is declared.fifo  # SQS: a FIFO queue needs a FIFO DLQ
        for props in (queue, dlq):
            assert props["KmsMasterKeyId"] == "alias/aws/sqs"
        depth_alarms = [
            a
            for a in alarms
            if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and dlq_id in _refs(a["Properties"].get("Dimensions"))
        ]
        assert len(depth_alarms) == 1, declared.id
        assert depth_alarms[0]["Properties"]["Threshold"] == 1
        assert depth_alarms[0]["Properties"]["AlarmActions"], "the alarm notifies nobody"


def test_queues_refuse_plain_http(synthesized: Synthesized) -> None:
    s = synthesized
    denied = set()
    for policy in s.resources("AWS::SQS::QueuePolicy").values():
        for statement in _statements(policy["Properties"]["PolicyDocument"]):
            if (
                statement["Effect"] == "Deny"
                and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
                == "false"
            ):
                denied |= _refs(policy["Properties"]["Queues"])
    every_queue = {
        s.logical_id(q)
        for pair in s.stack.queues.pairs.values()
        for q in (pair.queue, pair.dead_letters)
    }
    assert denied == every_queue


def test_sqs_event_sources_report_batch_item_failures(synthesized: Synthesized) -> None:
    s = synthesized
    mappings = list(s.resources("AWS::Lambda::EventSourceMapping").values())
    readers = [f for f in resources.FUNCTIONS if f.trigger is resources.Trigger.SQS]
    assert len(mappings) == len(readers)
    for declared in readers:
        function_id = s.logical_id(s.stack.functions.functions[declared.id])
        queue_id = s.logical_id(s.stack.queues.pairs[str(declared.consumes)].queue)
        (mapping,) = [
            m for m in mappings if m["Properties"]["FunctionName"] == {"Ref": function_id}
        ]
        assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["Properties"]["BatchSize"] == declared.batch_size


# --- functions and least privilege ------------------------------------------------------


def test_functions_match_their_declarations(synthesized: Synthesized) -> None:
    s = synthesized
    for declared in resources.FUNCTIONS:
        function = s.json["Resources"][s.logical_id(s.stack.functions.functions[declared.id])]
        props = function["Properties"]
        assert props["Handler"] == declared.handler
        assert props["Runtime"] in {"python3.12", "python3.13"}
        assert props["Architectures"] == ["arm64"]
        assert props["Timeout"] == declared.timeout_s
        assert props["MemorySize"] == declared.memory_mb
        assert props.get("ReservedConcurrentExecutions") == declared.reserved_concurrency
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        env = props["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == f"seg-{declared.id}"
        assert env[resources.ENV_LOG_LEVEL] == "INFO"
        # lambdas.settings needs every table name and queue URL (it fails fast).
        for table in resources.TABLES:
            assert s.logical_id(s.stack.storage.tables[table.id]) in _refs(env[table.env])
        for queue in resources.QUEUES:
            assert s.logical_id(s.stack.queues.pairs[queue.id].queue) in _refs(env[queue.env])
        has_endpoint = resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT in env
        assert has_endpoint is declared.posts_to_connections, declared.id
        if has_endpoint:
            ws_api = s.logical_id(s.stack.websocket_api.api)
            assert ws_api in _refs(env[resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT])
        is_api = declared.trigger is resources.Trigger.HTTP_API
        assert (resources.ENV_DEVICE_SERVICES_SECRET_ARN in env) is is_api
        signs = resources.ENV_POLICY_SIGNING_KEY_ARNS in env
        assert signs is declared.signs_policy, declared.id
        if signs:
            keys = {s.logical_id(k) for k in s.stack.signing.keys.values()}
            assert _refs(env[resources.ENV_POLICY_SIGNING_KEY_ARNS]) == keys


def test_no_function_traces_responses_or_errors_or_logs_events(synthesized: Synthesized) -> None:
    """Responses carry issued credentials and device passwords; X-Ray keeps them."""
    functions = synthesized.resources("AWS::Lambda::Function")
    assert len(functions) >= len(resources.FUNCTIONS)
    for logical_id, function in functions.items():
        env = function["Properties"].get("Environment", {}).get("Variables", {})
        assert env.get("POWERTOOLS_TRACER_CAPTURE_RESPONSE") == "false", logical_id
        assert env.get("POWERTOOLS_TRACER_CAPTURE_ERROR") == "false", logical_id
        assert env.get("POWERTOOLS_LOGGER_LOG_EVENT") == "false", logical_id


def test_each_function_policy_names_only_its_declared_resources(synthesized: Synthesized) -> None:
    s = synthesized
    table_ids = {t.id: s.logical_id(s.stack.storage.tables[t.id]) for t in resources.TABLES}
    queue_ids = {q.id: s.logical_id(s.stack.queues.pairs[q.id].queue) for q in resources.QUEUES}
    dlq_ids = {s.logical_id(p.dead_letters) for p in s.stack.queues.pairs.values()}
    secret_id = s.logical_id(s.stack.auth.device_services_secret)
    ws_api = s.logical_id(s.stack.websocket_api.api)
    signing_keys = {s.logical_id(k) for k in s.stack.signing.keys.values()}
    for declared in resources.FUNCTIONS:
        statements = _function_statements(s, declared.id)
        own_logs = s.logical_id(s.stack.functions.log_groups[declared.id])
        expected = {table_ids[t] for t in declared.tables}
        expected |= {queue_ids[q] for q in declared.sends_to}
        if declared.consumes:
            expected.add(queue_ids[declared.consumes])
        expected.add(own_logs)
        if declared.posts_to_connections:
            expected.add(ws_api)
        if declared.trigger is resources.Trigger.HTTP_API:
            expected.add(secret_id)
        if declared.signs_policy:
            expected |= signing_keys
        named = set().union(*(_refs(st.get("Resource")) for st in statements))
        assert named == expected, declared.id
        assert not named & dlq_ids  # nobody reads or writes a DLQ

        for table_id, access in declared.tables.items():
            actions = _actions_on(statements, table_ids[table_id])
            assert (actions >= READ_ACTIONS) is (access is not resources.Access.WRITE)
            assert bool(actions & READ_ACTIONS) is (access is not resources.Access.WRITE)
            assert bool(actions & WRITE_ACTIONS) is (access is not resources.Access.READ)
        for queue_id in declared.sends_to:
            actions = _actions_on(statements, queue_ids[queue_id])
            assert actions >= SEND_ACTIONS
            # A consumer may also send to its own queue (the compliance reader queues
            # continuation pages of a re-evaluation); nobody else may consume.
            assert not actions & CONSUME_ACTIONS or queue_id == declared.consumes
        if declared.consumes:
            actions = _actions_on(statements, queue_ids[declared.consumes])
            assert actions >= CONSUME_ACTIONS
            assert not actions & SEND_ACTIONS or declared.consumes in declared.sends_to
        for key in signing_keys:
            expected_kms = {"kms:Sign", "kms:GetPublicKey"} if declared.signs_policy else set()
            assert _actions_on(statements, key) == expected_kms, declared.id
        ws_actions = _actions_on(statements, ws_api)
        assert ws_actions == (
            {"execute-api:ManageConnections"} if declared.posts_to_connections else set()
        )
        for statement in statements:
            if ws_api in _refs(statement.get("Resource")):
                joined = json.dumps(statement["Resource"])
                assert f"/{s.stack.config.stage_name}/*/@connections/*" in joined
            unscoped = statement.get("Resource") == "*"
            if unscoped:  # only X-Ray, which has no resource-level permissions
                assert _actions(statement) == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_no_policy_grants_a_wildcard_action(synthesized: Synthesized) -> None:
    s = synthesized
    for logical_id, resource in s.json["Resources"].items():
        props = resource.get("Properties", {})
        documents = [props[k] for k in ("PolicyDocument", "AssumeRolePolicyDocument") if k in props]
        if resource["Type"] in {"AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"}:
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        if resource["Type"] == "AWS::KMS::Key":
            key_statements = _statements(props["KeyPolicy"])
            # The key policy's first statement is KMS's required administrator statement
            # for the account root; every other statement must be explicit.
            assert key_statements[0]["Principal"]["AWS"]["Fn::Join"][1][-1] == ":root"
            documents.append({"Statement": key_statements[1:]})
        for document in documents:
            for statement in _statements(document):
                if statement["Effect"] == "Deny":
                    continue  # e.g. enforceSSL: deny sqs:* over plain HTTP
                for action in _actions(statement):
                    assert "*" not in action, f"{logical_id}: {action}"


def test_policy_signing_keys_are_asymmetric_p256_signing_keys(synthesized: Synthesized) -> None:
    s = synthesized
    keys = s.stack.signing.keys
    assert list(keys) == list(s.stack.config.signing_keys)
    for key in keys.values():
        resource = s.json["Resources"][s.logical_id(key)]
        props = resource["Properties"]
        assert (props["KeySpec"], props["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
        assert resource["DeletionPolicy"] == "Retain"  # retain_data: true
        # Only the account's administrators in the key policy: use is granted per role.
        (statement,) = _statements(props["KeyPolicy"])
        assert statement["Principal"]["AWS"]["Fn::Join"][1][-1] == ":root"
    signers = [f.id for f in resources.FUNCTIONS if f.signs_policy]
    assert sorted(signers) == ["api", "compliance_reader", "issuer_keys", "ws_default"]


# --- APIs ------------------------------------------------------------------------------


def _routes(s: Synthesized, api: Any) -> dict[str, dict[str, Any]]:
    api_id = s.logical_id(api)
    return {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in s.resources("AWS::ApiGatewayV2::Route").values()
        if r["Properties"]["ApiId"] == {"Ref": api_id}
    }


def _integration_function(s: Synthesized, route: dict[str, Any]) -> str:
    (integration_id,) = _refs(route["Target"])
    uri = s.json["Resources"][integration_id]["Properties"]["IntegrationUri"]
    (function_id,) = _refs(uri)
    return function_id


def test_websocket_api_has_its_three_routes_on_the_declared_functions(
    synthesized: Synthesized,
) -> None:
    s = synthesized
    routes = _routes(s, s.stack.websocket_api.api)
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    for declared in resources.FUNCTIONS:
        if declared.trigger.value in routes:
            route = routes[declared.trigger.value]
            expected = s.logical_id(s.stack.functions.functions[declared.id])
            assert _integration_function(s, route) == expected
    s.template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": s.stack.config.stage_name,
            "AutoDeploy": True,
            "AccessLogSettings": assertions.Match.object_like({}),
        },
    )


def test_console_routes_use_the_jwt_authorizer_and_others_reach_the_app(
    synthesized: Synthesized,
) -> None:
    s = synthesized
    routes = _routes(s, s.stack.http_api.api)
    assert set(routes) == {
        "ANY /console/v1/{proxy+}",
        "GET /console",
        "GET /console/static/{proxy+}",
        "ANY /mdm/{proxy+}",
        "ANY /gateway/{proxy+}",
        "GET /health",
        "GET /openapi.json",
        "$default",
    }
    (authorizer_id, authorizer) = next(iter(s.resources("AWS::ApiGatewayV2::Authorizer").items()))
    assert authorizer["Properties"]["AuthorizerType"] == "JWT"
    pool = s.logical_id(s.stack.auth.user_pool)
    client = s.logical_id(s.stack.auth.client)
    assert pool in _refs(authorizer["Properties"]["JwtConfiguration"]["Issuer"])
    assert authorizer["Properties"]["JwtConfiguration"]["Audience"] == [{"Ref": client}]
    api_function = s.logical_id(s.stack.functions.functions["api"])
    for key, route in routes.items():
        assert _integration_function(s, route) == api_function
        if key.startswith("ANY /console/v1/"):
            assert route["AuthorizationType"] == "JWT"
            assert route["AuthorizerId"] == {"Ref": authorizer_id}
        else:
            assert route.get("AuthorizationType", "NONE") == "NONE", key
    s.template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": "$default",
            "DefaultRouteSettings": {"ThrottlingBurstLimit": 400, "ThrottlingRateLimit": 200},
            "AccessLogSettings": assertions.Match.object_like({}),
        },
    )


def test_console_roles_are_the_pools_groups(synthesized: Synthesized) -> None:
    groups = {
        g["Properties"]["GroupName"]: g["Properties"]["Precedence"]
        for g in synthesized.resources("AWS::Cognito::UserPoolGroup").values()
    }
    assert groups == {"admin": 0, "operator": 1, "viewer": 2}  # the highest role first


def test_the_audit_log_is_append_only_for_the_api(synthesized: Synthesized) -> None:
    s = synthesized
    statements = _function_statements(s, "api")
    actions = _actions_on(statements, s.logical_id(s.stack.storage.tables["audit_log"]))
    assert "dynamodb:PutItem" in actions
    assert not actions & {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def test_cognito_pool_is_admin_only_with_mfa(synthesized: Synthesized) -> None:
    s = synthesized
    s.template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {
            "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
            "MfaConfiguration": "ON",
        },
    )


# --- schedule, monitoring, outputs -------------------------------------------------------


def test_scheduled_functions_have_their_rule(synthesized: Synthesized) -> None:
    s = synthesized
    rules = list(s.resources("AWS::Events::Rule").values())
    scheduled = [f for f in resources.FUNCTIONS if f.trigger is resources.Trigger.SCHEDULE]
    assert len(rules) == len(scheduled)
    for declared in scheduled:
        function_id = s.logical_id(s.stack.functions.functions[declared.id])
        (rule,) = [r for r in rules if function_id in _refs(r["Properties"]["Targets"])]
        minutes = declared.schedule_minutes
        assert minutes is not None
        # CDK writes whole hours as hours (rate(1 hour), rate(2 hours)).
        if minutes % 60:
            expected = f"rate({minutes} minutes)"
        else:
            hours = minutes // 60
            expected = f"rate({hours} hour{'s' if hours > 1 else ''})"
        assert rule["Properties"]["ScheduleExpression"] == expected


def test_alarms_cover_function_errors_throttles_and_api_5xx(synthesized: Synthesized) -> None:
    s = synthesized
    alarms = [a["Properties"] for a in s.resources("AWS::CloudWatch::Alarm").values()]
    for declared in resources.FUNCTIONS:
        function_id = s.logical_id(s.stack.functions.functions[declared.id])
        for metric in ("Errors", "Throttles"):
            assert any(
                a.get("MetricName") == metric and function_id in _refs(a.get("Dimensions"))
                for a in alarms
            ), f"{declared.id} {metric}"
    api_id = s.logical_id(s.stack.http_api.api)
    assert any(a.get("MetricName") == "5xx" and api_id in _refs(a["Dimensions"]) for a in alarms)
    topic = s.logical_id(s.stack.monitoring.topic)
    assert all(a["AlarmActions"] == [{"Ref": topic}] for a in alarms)


def test_outputs_give_gateways_and_the_cli_what_they_need(synthesized: Synthesized) -> None:
    s = synthesized
    assert set(s.json["Outputs"]) >= {
        "HttpApiUrl",
        "WebSocketUrl",
        "UserPoolId",
        "UserPoolClientId",
        "DeviceServicesSecretArn",
        "PolicySigningKeyArns",
    }
    arns = s.json["Outputs"]["PolicySigningKeyArns"]["Value"]
    assert _refs(arns) == {s.logical_id(k) for k in s.stack.signing.keys.values()}


# --- cdk-nag ----------------------------------------------------------------------------


def test_cdk_nag_has_no_unacknowledged_findings(synthesized: Synthesized) -> None:
    s = synthesized
    # app.synth() in the fixture raised on any error; warnings do not raise, so read
    # the report and the stack's annotations as well.
    report = s.outdir / "validation-report.json"
    if report.exists():
        data = json.loads(report.read_text())
        violations = [v for p in data["pluginReports"] for v in p["violations"]]
        assert violations == []
    messages = assertions.Annotations.from_stack(s.stack)
    assert messages.find_warning("*", assertions.Match.string_like_regexp("AwsSolutions")) == []
    assert messages.find_error("*", assertions.Match.any_value()) == []


# --- the bundle -------------------------------------------------------------------------


def test_bundle_holds_the_code_and_arm64_wheels_for_the_runtime(synthesized: Synthesized) -> None:
    s = synthesized
    assets = json.loads((s.outdir / f"{s.stack.stack_name}.assets.json").read_text())["files"]
    bundles = [
        s.outdir / a["source"]["path"]
        for a in assets.values()
        if a["source"].get("packaging") == "zip"
    ]
    assert len(bundles) == 1  # one asset shared by every function
    bundle: Path = bundles[0]
    for declared in resources.FUNCTIONS:
        module = declared.handler.rsplit(".", 1)[0]
        assert (bundle / (module.replace(".", "/") + ".py")).is_file(), declared.handler
    assert (bundle / "seg_contract" / "__init__.py").is_file()
    native = [p.name for p in (bundle / "pydantic_core").glob("*.so")]
    assert native and all("cpython-313-aarch64-linux-gnu" in n for n in native), native
    for package in ("fastapi", "mangum", "aws_lambda_powertools", "nacl", "jwt", "cryptography"):
        assert (bundle / package).is_dir(), package
    assert not list(bundle.rglob("__pycache__"))
