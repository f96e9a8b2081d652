"""The control-plane stack: one construct per capability, wired from
``lambdas.resources``."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.auth import Auth
from cdk.bundling import lambda_code
from cdk.config import StackConfig
from cdk.functions import Functions
from cdk.http_api import HttpApi
from cdk.monitoring import Monitoring
from cdk.queues import Queues
from cdk.readers import Readers
from cdk.schedule import Schedules
from cdk.signing import PolicySigningKeys
from cdk.storage import Storage
from cdk.websocket_api import WebSocketApi
from lambdas import resources


class ControlPlaneStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.storage = Storage(self, "Storage", retain_data=config.retain_data)
        self.queues = Queues(self, "Queues")
        queues = {queue_id: pair.queue for queue_id, pair in self.queues.pairs.items()}
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            code=lambda_code(config.bundle_target),
            tables=self.storage.tables,
            queues=queues,
        )
        functions = self.functions.functions
        self.signing = PolicySigningKeys(
            self,
            "PolicySigning",
            labels=config.signing_keys,
            retain_data=config.retain_data,
            functions=functions,
        )
        Readers(self, "Readers", functions=functions, queues=queues)
        self.http_api = HttpApi(self, "HttpApi", config=config)
        self.auth = Auth(
            self,
            "Auth",
            retain_data=config.retain_data,
            console_url=self.http_api.url + "/console/",
            domain_prefix=config.auth_domain_prefix or f"seg-console-{self.account}",
        )

        http_functions = [
            f.id for f in resources.FUNCTIONS if f.trigger is resources.Trigger.HTTP_API
        ]
        if len(http_functions) != 1:
            raise ValueError(f"exactly one function must serve the HTTP API: {http_functions}")
        api_function = functions[http_functions[0]]
        # Device Services calls the HTTP API: its function checks the MDM's key.
        api_function.add_environment(
            resources.ENV_DEVICE_SERVICES_SECRET_ARN, self.auth.device_services_secret.secret_arn
        )
        self.auth.device_services_secret.grant_read(api_function)
        # The dashboard's sign-in goes to the Cognito hosted UI.
        api_function.add_environment(
            resources.ENV_CONSOLE_OAUTH_AUTHORIZE_URL, self.auth.authorize_url
        )
        api_function.add_environment(
            resources.ENV_CONSOLE_OAUTH_CLIENT_ID, self.auth.client.user_pool_client_id
        )
        self.http_api.add_app_routes(api_function, self.auth.authorizer)

        self.websocket_api = WebSocketApi(self, "WebSocketApi", config=config, functions=functions)
        Schedules(self, "Schedules", functions=functions)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            alarm_email=config.alarm_email,
            queues=self.queues.pairs,
            functions=functions,
            http_api=self.http_api.api,
        )

        CfnOutput(
            self,
            "HttpApiUrl",
            value=self.http_api.url,
            description="Base URL of the control-plane HTTP API (gateways, MDM, console)",
        )
        CfnOutput(
            self,
            "WebSocketUrl",
            value=self.websocket_api.url,
            description="WebSocket URL gateway nodes connect to",
        )
        CfnOutput(
            self,
            "WebSocketManagementEndpoint",
            value=self.websocket_api.management_endpoint,
            description="@connections endpoint the functions push through",
        )
        CfnOutput(
            self,
            "PolicySigningKeyArns",
            value=self.signing.key_arns,
            description="KMS keys that sign gateway policy (comma separated); a node pins "
            "`aws kms get-public-key --key-id <arn> --query PublicKey --output text`",
        )
        CfnOutput(
            self,
            "UserPoolId",
            value=self.auth.user_pool.user_pool_id,
            description="Cognito user pool of console admins",
        )
        CfnOutput(
            self,
            "UserPoolClientId",
            value=self.auth.client.user_pool_client_id,
            description="Cognito app client of the dashboard and the CLI",
        )
        CfnOutput(
            self,
            "DeviceServicesSecretArn",
            value=self.auth.device_services_secret.secret_arn,
            description="Secrets Manager secret holding the Device Services bearer key",
        )
