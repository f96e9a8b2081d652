"""Importing a handler needs no environment: clients are built on first use (so CDK
synth, the local runtime and tests can import them freely). Integration tier: the X-Ray
SDK behind powertools' Tracer opens a UDP socket when it is imported."""

from __future__ import annotations

import importlib
import os

import pytest

from lambdas import resources

HANDLERS = [
    "lambdas.handlers.compliance_reader",
    "lambdas.handlers.issuer_keys",
    "lambdas.handlers.notice_sender",
    "lambdas.handlers.payload_reader",
    "lambdas.handlers.roster_compactor",
    "lambdas.handlers.scheduled_checkin",
    "lambdas.handlers.ws_connect",
    "lambdas.handlers.ws_disconnect",
    "lambdas.handlers.ws_default",
]


@pytest.mark.parametrize("module", HANDLERS)
def test_handler_imports_without_environment(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SEG_"):
            monkeypatch.delenv(name)
    imported = importlib.import_module(module)
    assert callable(imported.handler)


def test_every_write_side_function_points_at_an_existing_handler() -> None:
    for function in resources.FUNCTIONS:
        module, _, name = function.handler.rpartition(".")
        if module in HANDLERS:
            assert callable(getattr(importlib.import_module(module), name))
