"""Entry point: ``python -m cdk.app`` (what ``cdk.json`` runs).

Builds the app and the control-plane stack from CDK context and runs cdk-nag's
AwsSolutions checks on it."""

from __future__ import annotations

import os
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from cdk.acknowledgments import acknowledge_findings
from cdk.config import config_from_node
from cdk.stack import ControlPlaneStack

STACK_NAME = "SecureEmailGatewayControlPlane"


def build_app(
    context: dict[str, Any] | None = None, outdir: str | None = None
) -> tuple[cdk.App, ControlPlaneStack]:
    app = cdk.App(context=context, outdir=outdir)
    config = config_from_node(app.node)
    env = None
    if os.environ.get("CDK_DEFAULT_ACCOUNT") and os.environ.get("CDK_DEFAULT_REGION"):
        env = cdk.Environment(
            account=os.environ["CDK_DEFAULT_ACCOUNT"], region=os.environ["CDK_DEFAULT_REGION"]
        )
    stack = ControlPlaneStack(
        app,
        STACK_NAME,
        config=config,
        env=env,
        description="Secure Email Gateway control plane (Lambda, SQS, DynamoDB, API Gateway)",
    )
    cdk.Tags.of(stack).add("project", "secure-email-gateway")
    acknowledge_findings(stack)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
