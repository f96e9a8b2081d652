"""The HTTP API (API Gateway v2) in front of the FastAPI function.

Console data routes sit behind the Cognito JWT authorizer; the dashboard's static page,
Device Services (``/mdm``), gateways (``/gateway``), ``/health`` and ``/openapi.json``
reach the function directly and the application checks their bearer credentials.
"""

from __future__ import annotations

import jsii
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.config import StackConfig

ANY = apigwv2.HttpMethod.ANY
GET = apigwv2.HttpMethod.GET

# (path, methods, behind the JWT authorizer)
ROUTES: tuple[tuple[str, tuple[apigwv2.HttpMethod, ...], bool], ...] = (
    ("/console/v1/{proxy+}", (ANY,), True),
    # API Gateway route paths cannot end in "/": the page is served at /console.
    ("/console", (GET,), False),
    ("/console/static/{proxy+}", (GET,), False),
    ("/mdm/{proxy+}", (ANY,), False),
    ("/gateway/{proxy+}", (ANY,), False),
    ("/health", (GET,), False),
    ("/openapi.json", (GET,), False),
)

ACCESS_LOG_FORMAT = apigw.AccessLogFormat.json_with_standard_fields(
    caller=False,
    http_method=True,
    ip=True,
    protocol=True,
    request_time=True,
    resource_path=True,
    response_length=True,
    status=True,
    user=False,
)


@jsii.implements(apigwv2.IAccessLogSettings)
class AccessLogSettings:
    """A stage's access logs: JSON lines into ``log_group`` (an interface in jsii, so it
    needs a class rather than a dict)."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return ACCESS_LOG_FORMAT


class HttpApi(Construct):
    """The API and its throttled, access-logged ``$default`` stage; ``add_app_routes``
    wires ``ROUTES`` once the function and the authorizer exist (the Cognito client
    needs this API's URL first, for its OAuth callback)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.api = apigwv2.HttpApi(
            self,
            "Api",
            description="Secure Email Gateway control plane",
            create_default_stage=False,
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=config.log_retention)
        self.stage = apigwv2.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=config.throttle_rate, burst_limit=config.throttle_burst
            ),
            access_log_settings=AccessLogSettings(self.access_logs),
        )

    def add_app_routes(
        self, function: lambda_.IFunction, authorizer: authorizers.HttpUserPoolAuthorizer
    ) -> None:
        integration = integrations.HttpLambdaIntegration("App", function)
        for path, methods, jwt in ROUTES:
            self.api.add_routes(
                path=path,
                methods=list(methods),
                integration=integration,
                authorizer=authorizer if jwt else None,
            )
        # Route keys cannot end in "/", so the dashboard page (/console/, where /console
        # redirects) arrives here, as does any unknown path (the app answers 404). API
        # Gateway uses $default only when no route above matches, so /console/v1/* always
        # meets the JWT authorizer first.
        apigwv2.HttpRoute(
            self.api,
            "CatchAll",  # not "Default": CDK leaves that id out of logical ids
            http_api=self.api,
            route_key=apigwv2.HttpRouteKey.DEFAULT,
            integration=integration,
        )

    @property
    def url(self) -> str:
        """The base URL, without a trailing "/" (clients append "/console/v1/...")."""
        return self.api.api_endpoint
