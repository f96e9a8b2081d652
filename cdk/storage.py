"""DynamoDB tables, one per ``lambdas.resources.TABLES`` declaration."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from lambdas import resources

_KEY_TYPES = {
    resources.KeyType.S: dynamodb.AttributeType.STRING,
    resources.KeyType.N: dynamodb.AttributeType.NUMBER,
}


def _attribute(key: resources.Key) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_KEY_TYPES[key.type])


class Storage(Construct):
    """On-demand tables with point-in-time recovery, KMS encryption and TTL where declared.
    ``tables`` maps each declaration's id to its table."""

    def __init__(self, scope: Construct, construct_id: str, *, retain_data: bool) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY
        self.tables: dict[str, dynamodb.Table] = {}
        for declared in resources.TABLES:
            table = dynamodb.Table(
                self,
                declared.id,
                partition_key=_attribute(declared.partition),
                sort_key=_attribute(declared.sort) if declared.sort else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                time_to_live_attribute=declared.ttl_attribute,
                removal_policy=removal,
            )
            for index in declared.indexes:
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=_attribute(index.partition),
                    sort_key=_attribute(index.sort) if index.sort else None,
                    projection_type=dynamodb.ProjectionType.ALL,
                )
            self.tables[declared.id] = table
