"""The local moto server stays bounded under reads: moto tracks a model instance for
every item copy a Scan returns, and the trimmer must drop those references without
touching the data."""

from __future__ import annotations

import time

import boto3

from seg_local.moto_server import LocalMotoServer, tracked_instances


def test_reads_do_not_accumulate_tracked_instances_and_data_survives() -> None:
    server = LocalMotoServer("127.0.0.1", trim_interval_s=0.05)
    endpoint = server.start()
    try:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        dynamodb.create_table(
            TableName="soak",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for i in range(50):
            dynamodb.put_item(TableName="soak", Item={"pk": {"S": f"item-{i}"}})
        # Each scan copies all 50 items: 200 scans create 10,000 tracked copies unless
        # the trimmer drops them.
        for _ in range(200):
            assert dynamodb.scan(TableName="soak")["Count"] == 50
        time.sleep(0.3)  # at least one more trim after the last scan
        assert tracked_instances() < 2_000
        assert dynamodb.scan(TableName="soak")["Count"] == 50
    finally:
        server.stop()
