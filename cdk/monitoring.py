"""Alarms on what needs a human: messages in a DLQ, function errors and throttles, and
HTTP API 5xx; all notify one SNS topic (e-mail subscription from context)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk.queues import QueuePair

PERIOD = Duration.minutes(5)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        alarm_email: str | None,
        queues: dict[str, QueuePair],
        functions: dict[str, lambda_.Function],
        http_api: apigwv2.HttpApi,
    ) -> None:
        super().__init__(scope, construct_id)
        # A customer-managed key: CloudWatch cannot publish to a topic encrypted with
        # the AWS-managed aws/sns key.
        key = kms.Key(self, "TopicKey", enable_key_rotation=True, description="seg alarm topic")
        key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey"
        )
        self.topic = sns.Topic(self, "Alarms", master_key=key, enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        notify = actions.SnsAction(self.topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(name: str, metric: cloudwatch.IMetric, description: str) -> None:
            created = cloudwatch.Alarm(
                self,
                name,
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(notify)
            self.alarms[name] = created

        for queue_id, pair in queues.items():
            alarm(
                f"{queue_id}-dlq-depth",
                pair.dead_letters.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                f"Messages from the {queue_id} queue failed {queue_id} processing and wait "
                "in its DLQ: inspect, fix, then redrive",
            )
        for function_id, function in functions.items():
            alarm(
                f"{function_id}-errors",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                f"The {function_id} function failed",
            )
            alarm(
                f"{function_id}-throttles",
                function.metric_throttles(period=PERIOD, statistic="Sum"),
                f"The {function_id} function was throttled",
            )
        alarm(
            "http-api-5xx",
            http_api.metric_server_error(period=PERIOD, statistic="Sum"),
            "The control-plane HTTP API answered 5xx",
        )
