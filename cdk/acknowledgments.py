"""cdk-nag (AwsSolutions) findings this stack accepts, each with its written reason.

Wildcard IAM resources are acknowledged one finding at a time, and only for the four
shapes we mean to grant: X-Ray (no resource-level permissions), a function's own log
streams, a granted table's indexes, and this WebSocket API's @connections. Any other
wildcard stays an error and fails ``cdk synth``.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

from cdk.http_api import ROUTES

IAM5_REASONS = (
    (
        lambda r: r == "*",
        "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions "
        "(active tracing, added by Lambda's tracing option).",
    ),
    (
        lambda r: r.endswith(":log-stream:*"),
        "Log streams of this function's own log group: Lambda names a new stream per "
        "execution environment, so they cannot be listed in advance.",
    ),
    (
        lambda r: r.endswith("/index/*"),
        "The global secondary indexes of a table this function is declared to use "
        "(lambdas/resources.py); the wildcard never leaves that table.",
    ),
    (
        lambda r: r.endswith("/*/@connections/*"),
        "Posting to gateway connections of this stack's WebSocket API stage only: "
        "connection ids are created at run time.",
    ),
)

ACKNOWLEDGED = {
    "AwsSolutions-L1": "Python 3.13 is the newest Lambda runtime inside the project's "
    "supported range (requires-python <3.14 in pyproject.toml, which the bundle's wheels "
    "are built for); moving to 3.14 is a deliberate upgrade of that range.",
    "AwsSolutions-COG8": "The Plus feature plan (threat protection) is a paid add-on for "
    "a handful of admin accounts that already need a password and TOTP; tenants can "
    "enable it on the pool without a code change.",
    "AwsSolutions-SMG4": "The Device Services key is shared with the MDM's configuration; "
    "rotating it is a coordinated change on both sides, documented in the README.",
}

APIG4_REASON = {
    "http": "Authenticated by the application: Device Services and gateways present "
    "bearer credentials the function checks (constant time, revocable); /health, "
    "/openapi.json and the dashboard's static page are public by design and hold no data; "
    "$default only sees paths no authorized route matches.",
    "ws": "Gateway nodes authenticate in $connect with their cluster credential, checked "
    "by the ws_connect function (a Lambda authorizer would run the same check); "
    "$default and $disconnect only reach connections $connect accepted.",
}


def _flatten(value: Any) -> str:
    """A resolved IAM resource in cdk-nag's notation: ``<Logical.Arn>``, ``<Ref>``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            return "<" + ".".join(value["Fn::GetAtt"]) + ">"
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(_flatten(p) for p in parts)
    return str(value)


def _resources(document: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in document.get("Statement", []):
        listed = statement.get("Resource", [])
        for resource in listed if isinstance(listed, list) else [listed]:
            found.add(_flatten(resource))
    return found


def _acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_findings(stack: Stack) -> None:
    for construct in stack.node.find_all():
        if isinstance(construct, iam.Policy):
            document = stack.resolve(construct.document.to_json())
            for resource in sorted(_resources(document)):
                if "*" not in resource:
                    continue
                for matches, reason in IAM5_REASONS:
                    if matches(resource):
                        # On the role when the policy is a role's: a large policy is split
                        # into overflow managed policies under the role at synthesis.
                        owner = construct.node.scope
                        target = owner if isinstance(owner, iam.Role) else construct
                        _acknowledge(target, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
                        break
        elif isinstance(construct, lambda_.Function):
            _acknowledge(construct, "AwsSolutions-L1", ACKNOWLEDGED["AwsSolutions-L1"])
    auth = stack.node.find_child("Auth")
    _acknowledge(auth, "AwsSolutions-COG8", ACKNOWLEDGED["AwsSolutions-COG8"])
    _acknowledge(auth, "AwsSolutions-SMG4", ACKNOWLEDGED["AwsSolutions-SMG4"])

    http_api = stack.node.find_child("HttpApi").node.find_child("Api")
    public = {path for path, _, jwt in ROUTES if not jwt}
    for route in http_api.node.children:
        route_path = route.node.id.split("--", 1)[-1].replace("--", "/")
        if "/" + route_path in public or route.node.id == "CatchAll":
            _acknowledge(route, "AwsSolutions-APIG4", APIG4_REASON["http"])
    ws_api = stack.node.find_child("WebSocketApi").node.find_child("Api")
    for route in ws_api.node.children:
        if route.node.id.endswith("-Route"):
            _acknowledge(route, "AwsSolutions-APIG4", APIG4_REASON["ws"])
