"""Who may call the control plane: console users (Cognito user pool + the HTTP API's
JWT authorizer; their role comes from the pool's groups ``viewer``, ``operator`` and
``admin``) and Device Services (a bearer key kept in Secrets Manager).

Gateways authenticate with cluster credentials checked by the application itself.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from lambdas.domain.roles import Role

ROLE_DESCRIPTIONS = {
    Role.VIEWER: "Console: read only",
    Role.OPERATOR: "Console: block, allow and clear devices, write notes",
    Role.ADMIN: "Console: everything, including clusters, credentials and settings",
}


class Auth(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retain_data: bool,
        console_url: str,
        domain_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        # Admins are created by an operator (README: "Create the console admin");
        # nobody signs up, and a second factor (TOTP) is required.
        self.user_pool = cognito.UserPool(
            self,
            "ConsoleAdmins",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY,
        )
        self.client = self.user_pool.add_client(
            "Console",
            generate_secret=False,  # the dashboard and the CLI are public clients
            auth_flows=cognito.AuthFlow(user_srp=True, user_password=True),
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
            prevent_user_existence_errors=True,
            # The dashboard signs in through the hosted UI and keeps the token in the
            # page (no server-side session to hold a client secret).
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(implicit_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[console_url],
                logout_urls=[console_url],
            ),
        )
        # Console roles (lambdas.domain.roles): the token's cognito:groups claim names
        # them; a user in several groups holds the highest; a user in none is refused.
        self.groups = {
            role.label: cognito.CfnUserPoolGroup(
                self,
                f"Group{role.label.capitalize()}",
                user_pool_id=self.user_pool.user_pool_id,
                group_name=role.label,
                description=ROLE_DESCRIPTIONS[role],
                precedence=len(Role) - role.value,
            )
            for role in Role
        }
        self.domain = self.user_pool.add_domain(
            "HostedUi",
            cognito_domain=cognito.CognitoDomainOptions(domain_prefix=domain_prefix),
        )
        self.authorize_url = self.domain.base_url() + "/oauth2/authorize"
        self.authorizer = authorizers.HttpUserPoolAuthorizer(
            "ConsoleJwt", self.user_pool, user_pool_clients=[self.client]
        )
        # The Device Services (MDM) bearer key: generated here, read by the API function
        # (SEG_DEVICE_SERVICES_SECRET_ARN) and copied into the MDM's configuration.
        self.device_services_secret = secretsmanager.Secret(
            self,
            "DeviceServicesKey",
            description="Bearer key Device Services (the MDM) presents to /mdm/v1/events",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48, exclude_punctuation=True
            ),
        )
