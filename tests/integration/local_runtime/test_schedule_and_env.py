"""The EventBridge stand-in and the environment the handlers read."""

from __future__ import annotations

import hashlib

import boto3
import httpx
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

from lambdas import resources
from lambdas.settings import parse_settings

from .conftest import Runtime


def test_schedule_fires_with_a_scheduled_event(runtime: Runtime) -> None:
    events = runtime.rec.wait_for("scheduled", lambda ev: len(ev) >= 2)
    parsed = EventBridgeModel.model_validate(events[0])
    assert parsed.detail_type == "Scheduled Event"
    assert parsed.source == "aws.events"


def test_environment_names_every_resource(runtime: Runtime) -> None:
    env = runtime.cp.env
    settings = parse_settings(env)  # the handlers' own parser accepts it
    assert set(settings.tables) == {t.id for t in resources.TABLES}
    assert set(settings.queues) == {q.id for q in resources.QUEUES}
    assert settings.console_auth == "static"
    assert runtime.cp.endpoints is not None
    token = runtime.cp.endpoints.admin_token
    assert settings.console_token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert settings.websocket_management_endpoint == runtime.cp.endpoints.management_endpoint


def test_tables_carry_their_indexes_and_ttl(runtime: Runtime) -> None:
    assert runtime.cp.endpoints is not None and runtime.cp.provisioned is not None
    ddb = boto3.client(
        "dynamodb", endpoint_url=runtime.cp.endpoints.moto_endpoint, region_name="us-east-1"
    )
    for table in resources.TABLES:
        name = runtime.cp.provisioned.tables[table.id]
        desc = ddb.describe_table(TableName=name)["Table"]
        indexes = {i["IndexName"] for i in desc.get("GlobalSecondaryIndexes", [])}
        assert indexes == {i.name for i in table.indexes}
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if table.ttl_attribute:
            assert ttl["AttributeName"] == table.ttl_attribute


def test_api_is_served(runtime: Runtime) -> None:
    assert runtime.cp.endpoints is not None
    r = httpx.get(runtime.cp.endpoints.api_url + "/health")
    assert r.json() == {"status": "ok"}


def test_ttl_sweeper_deletes_expired_items(runtime: Runtime) -> None:
    assert runtime.cp.endpoints is not None and runtime.cp.provisioned is not None
    assert runtime.cp.ttl_sweeper is not None
    ddb = boto3.client(
        "dynamodb", endpoint_url=runtime.cp.endpoints.moto_endpoint, region_name="us-east-1"
    )
    table = runtime.cp.provisioned.tables["connections"]
    now = 2_000_000_000
    ddb.put_item(
        TableName=table, Item={"connection_id": {"S": "old"}, "expires_at": {"N": str(now - 1)}}
    )
    ddb.put_item(
        TableName=table, Item={"connection_id": {"S": "new"}, "expires_at": {"N": str(now + 60)}}
    )
    ddb.put_item(TableName=table, Item={"connection_id": {"S": "none"}})
    assert runtime.cp.ttl_sweeper.sweep(now=now) == 1
    left = {i["connection_id"]["S"] for i in ddb.scan(TableName=table)["Items"]}
    assert {"new", "none"} <= left and "old" not in left
