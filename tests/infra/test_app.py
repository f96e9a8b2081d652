"""The app's parameters and its cdk-nag gate (synthesized without bundling: fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import aws_iam as iam

from cdk.app import build_app
from cdk.bundling import BundlingError, lambda_dependencies
from cdk.config import BundleTarget, ConfigError, StackConfig, parse_config

NO_BUNDLING: dict[str, list[str]] = {"aws:cdk:bundling-stacks": []}


def test_no_context_gives_the_documented_defaults() -> None:
    config = parse_config({})
    assert config == StackConfig()
    assert config.stage_name == "v1"
    assert config.alarm_email is None
    assert config.log_retention_days == 90
    assert config.log_level == "INFO"
    assert config.retain_data is True
    assert config.bundle_target is BundleTarget.LAMBDA


def test_cli_strings_are_parsed() -> None:
    config = parse_config(
        {
            "stage_name": "prod",
            "alarm_email": "ops@example.com",
            "log_retention_days": "30",
            "log_level": "debug",
            "retain_data": "false",
            "throttle_rate": "50",
        }
    )
    assert (config.stage_name, config.alarm_email) == ("prod", "ops@example.com")
    assert (config.log_retention_days, config.log_level) == (30, "DEBUG")
    assert config.retain_data is False
    assert config.throttle_rate == 50


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("stage_name", "has space", "stage_name"),
        ("alarm_email", "not-an-address", "alarm_email"),
        ("log_retention_days", "42", "CloudWatch allows"),
        ("log_retention_days", "many", "expected an integer"),
        ("log_level", "LOUD", "log_level"),
        ("retain_data", "maybe", "expected true or false"),
        ("throttle_burst", "0", "at least 1"),
        ("bundle_target", "docker", "bundle_target"),
        ("auth_domain_prefix", "Has_Upper", "auth_domain_prefix"),
        ("execute_api_base_url", "ftp://x", "execute_api_base_url"),
        ("signing_keys", "1,2,3,4", "1 to 3 key labels"),
        ("signing_keys", "1,1", "listed twice"),
        ("signing_keys", "key-1", "letters or digits"),
        ("signing_keys", " , ", "1 to 3 key labels"),
    ],
)
def test_bad_context_fails_with_a_clear_message(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({key: value})


def test_signing_key_labels_come_from_a_list_or_a_comma_string() -> None:
    assert StackConfig().signing_keys == ("1",)
    assert parse_config({"signing_keys": "1, 2"}).signing_keys == ("1", "2")
    assert parse_config({"signing_keys": ["a", "b"]}).signing_keys == ("a", "b")


def test_a_rotation_deploys_two_keys_both_granted_to_every_signer(tmp_path: Path) -> None:
    app, stack = build_app(context={**NO_BUNDLING, "signing_keys": "1,2"}, outdir=str(tmp_path))
    app.synth()  # cdk-nag passes with two keys as well
    assert set(stack.signing.keys) == {"1", "2"}
    template = stack.resolve(stack.signing.key_arns)
    assert len(template["Fn::Join"][1]) == 2


def test_the_bundle_dependencies_come_from_pyproject(tmp_path: Path) -> None:
    deps = lambda_dependencies()
    assert any(d.startswith("pydantic") for d in deps)  # seg_contract's
    assert any(d.startswith("fastapi") for d in deps)
    assert any(d.startswith("cryptography") for d in deps)  # seg_contract.signing's
    broken = tmp_path / "pyproject.toml"
    broken.write_text('[project]\nname = "x"\n')
    with pytest.raises(BundlingError, match="lambda extra"):
        lambda_dependencies(broken)


def test_synth_with_no_context_passes_cdk_nag(tmp_path: Path) -> None:
    app, stack = build_app(context=NO_BUNDLING, outdir=str(tmp_path))
    app.synth()  # raises on any unacknowledged AwsSolutions finding
    assert stack.config == StackConfig()


def test_cdk_nag_rejects_an_unacknowledged_wildcard(tmp_path: Path) -> None:
    app, stack = build_app(context=NO_BUNDLING, outdir=str(tmp_path))
    stack.functions.functions["payload_reader"].add_to_role_policy(
        iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=["arn:aws:dynamodb:*:*:*"])
    )
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-IAM5[Resource::arn:aws:dynamodb:*:*:*]" in report


def test_a_notice_sender_may_send_from_its_identity_only(tmp_path: Path) -> None:
    app, stack = build_app(
        context={**NO_BUNDLING, "notice_sender": "it@example.com"}, outdir=str(tmp_path)
    )
    app.synth()
    role = stack.functions.functions["notice_sender"].role
    assert role is not None
    policy = json.dumps(stack.resolve(role.node.find_child("DefaultPolicy").document.to_json()))
    assert "ses:SendEmail" in policy
    assert "identity/it@example.com" in policy and "identity/example.com" in policy
    for other in ("api", "payload_reader", "compliance_reader"):
        other_role = stack.functions.functions[other].role
        assert other_role is not None
        found = json.dumps(
            stack.resolve(other_role.node.find_child("DefaultPolicy").document.to_json())
        )
        assert "ses:" not in found, other
    with pytest.raises(ConfigError, match="notice_sender"):
        parse_config({"notice_sender": "not an address"})
