"""The WebSocket API gateway nodes hold open: ``$connect``, ``$disconnect`` and
``$default`` routes to the functions declared with those triggers, one stage, and the
@connections management endpoint handed to every function that pushes."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.config import StackConfig
from cdk.http_api import AccessLogSettings
from lambdas import resources


def _only_function(
    trigger: resources.Trigger, functions: dict[str, lambda_.Function]
) -> lambda_.Function:
    declared = [f.id for f in resources.FUNCTIONS if f.trigger is trigger]
    if len(declared) != 1:
        raise ValueError(f"exactly one function must handle {trigger.value}, found {declared}")
    return functions[declared[0]]


class WebSocketApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        functions: dict[str, lambda_.Function],
    ) -> None:
        super().__init__(scope, construct_id)

        def route(trigger: resources.Trigger) -> apigwv2.WebSocketRouteOptions:
            return apigwv2.WebSocketRouteOptions(
                integration=integrations.WebSocketLambdaIntegration(
                    trigger.value.lstrip("$"), _only_function(trigger, functions)
                )
            )

        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            description="Secure Email Gateway: push channel to gateway nodes",
            route_selection_expression="$request.body.action",
            connect_route_options=route(resources.Trigger.WEBSOCKET_CONNECT),
            disconnect_route_options=route(resources.Trigger.WEBSOCKET_DISCONNECT),
            default_route_options=route(resources.Trigger.WEBSOCKET_DEFAULT),
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=config.log_retention)
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=config.stage_name,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=config.throttle_rate, burst_limit=config.throttle_burst
            ),
            access_log_settings=AccessLogSettings(self.access_logs),
        )
        stack = Stack.of(self)
        # Built from the stage name (not the stage resource) so the functions can carry
        # it without a dependency cycle: stage -> routes -> functions.
        if config.execute_api_base_url:
            base = f"{config.execute_api_base_url}/{self.api.api_id}/{config.stage_name}"
            self.management_endpoint = base
            self.url = "ws" + base.removeprefix("http")
        else:
            host = f"{self.api.api_id}.execute-api.{stack.region}.{stack.url_suffix}"
            self.management_endpoint = f"https://{host}/{config.stage_name}"
            self.url = f"wss://{host}/{config.stage_name}"
        connections_arn = stack.format_arn(
            service="execute-api",
            resource=self.api.api_id,
            resource_name=f"{config.stage_name}/*/@connections/*",
        )
        for declared in resources.FUNCTIONS:
            if not declared.posts_to_connections:
                continue
            function = functions[declared.id]
            function.add_environment(
                resources.ENV_WEBSOCKET_MANAGEMENT_ENDPOINT, self.management_endpoint
            )
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["execute-api:ManageConnections"], resources=[connections_arn]
                )
            )
