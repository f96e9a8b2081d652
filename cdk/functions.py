"""The Lambda functions, one per ``lambdas.resources.FUNCTIONS`` declaration.

Each function gets its own role holding exactly what its declaration lists: read, write
or read-write data on its tables (and their indexes), send on the queues it sends to,
and write on its own log group. Consuming, WebSocket posting, policy signing and the
Device Services secret are granted by the constructs that own those resources.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.bundling import ARCHITECTURE, RUNTIME
from cdk.config import StackConfig
from lambdas import resources

METRICS_NAMESPACE = "SecureEmailGateway"
_LEVELS = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
    "CRITICAL": lambda_.ApplicationLogLevel.FATAL,
}


def grant_table(table: dynamodb.Table, access: resources.Access, grantee: iam.IGrantable) -> None:
    if access is resources.Access.READ:
        table.grant_read_data(grantee)
    elif access is resources.Access.WRITE:
        table.grant_write_data(grantee)
    elif access is resources.Access.APPEND:
        # Read and add, never update or delete: an append-only record.
        table.grant_read_data(grantee)
        table.grant(grantee, "dynamodb:PutItem")
    else:
        table.grant_read_write_data(grantee)


def ses_identity_arns(scope: Construct, sender: str) -> list[str]:
    """The SES identities a sender address may be verified as: itself or its domain."""
    stack = Stack.of(scope)
    domain = sender.rpartition("@")[2]
    return [
        stack.format_arn(service="ses", resource="identity", resource_name=name)
        for name in (sender, domain)
    ]


class Functions(Construct):
    """``functions`` maps each declaration's id to its function."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        code: lambda_.Code,
        tables: dict[str, dynamodb.Table],
        queues: dict[str, sqs.Queue],
    ) -> None:
        super().__init__(scope, construct_id)
        # lambdas.settings wants every name (it fails fast on a missing one); a name is
        # not access: the role below is what limits each function.
        shared_env = {t.env: tables[t.id].table_name for t in resources.TABLES}
        shared_env |= {q.env: queues[q.id].queue_url for q in resources.QUEUES}
        shared_env |= {
            resources.ENV_CONSOLE_AUTH: "jwt",
            resources.ENV_LOG_LEVEL: config.log_level,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            # The audit trail is kept as long as the logs.
            resources.ENV_AUDIT_RETENTION_DAYS: str(config.log_retention_days),
        }
        # Tracing never records responses or errors, logging never the event (secrets).
        shared_env |= resources.OBSERVABILITY_ENV
        self.functions: dict[str, lambda_.Function] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        for declared in resources.FUNCTIONS:
            self.functions[declared.id] = self._function(
                declared,
                config=config,
                code=code,
                shared_env=shared_env,
                tables=tables,
                queues=queues,
            )

    def _function(
        self,
        declared: resources.Function,
        *,
        config: StackConfig,
        code: lambda_.Code,
        shared_env: dict[str, str],
        tables: dict[str, dynamodb.Table],
        queues: dict[str, sqs.Queue],
    ) -> lambda_.Function:
        scope = Construct(self, declared.id)
        log_group = logs.LogGroup(scope, "Logs", retention=config.log_retention)
        role = iam.Role(
            scope,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"seg {declared.id}: {declared.purpose}"[:1000],
        )
        # Instead of the AWSLambdaBasicExecutionRole managed policy (logs:* on every
        # log group): write to this function's own log group only.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn, f"{log_group.log_group_arn}:log-stream:*"],
            )
        )
        function = lambda_.Function(
            scope,
            "Function",
            description=declared.purpose[:256],
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=code,
            handler=declared.handler,
            role=role,
            memory_size=declared.memory_mb,
            timeout=Duration.seconds(declared.timeout_s),
            reserved_concurrent_executions=declared.reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_LEVELS[config.log_level],
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            environment={**shared_env, "POWERTOOLS_SERVICE_NAME": f"seg-{declared.id}"},
        )
        for table_id, access in declared.tables.items():
            grant_table(tables[table_id], access, function)
        for queue_id in declared.sends_to:
            queues[queue_id].grant_send_messages(function)
        if declared.sends_email and config.notice_sender:
            function.add_environment(resources.ENV_NOTICE_SENDER, config.notice_sender)
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["ses:SendEmail"],
                    resources=ses_identity_arns(scope, config.notice_sender),
                )
            )
        self.log_groups[declared.id] = log_group
        return function
