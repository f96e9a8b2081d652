"""Synthesize the CDK app the way ``cdk synth`` does (cdk.json's context), for tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import assertions

from cdk.app import build_app
from cdk.stack import ControlPlaneStack

REPO_ROOT = Path(__file__).resolve().parents[2]


def cdk_json_context() -> dict[str, Any]:
    """The context ``cdk synth`` uses (feature flags and defaults from cdk.json)."""
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


@dataclass
class Synthesized:
    stack: ControlPlaneStack
    template: assertions.Template
    json: dict[str, Any]
    outdir: Path

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.resolve(self.stack.get_logical_id(construct.node.default_child)))

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == resource_type}


def synthesize(outdir: Path, **context: Any) -> Synthesized:
    app, stack = build_app(context={**cdk_json_context(), **context}, outdir=str(outdir))
    app.synth()  # runs cdk-nag: raises on any unacknowledged finding
    template = assertions.Template.from_stack(stack)
    return Synthesized(stack=stack, template=template, json=dict(template.to_json()), outdir=outdir)
