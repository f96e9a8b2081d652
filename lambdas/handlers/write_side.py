"""Composition helpers for the write side's Lambda functions: the adapters each
function needs (``lambdas.composition``) and their shared log configuration. Each
handler module calls these once (lazily, inside a cached function) so importing a handler
needs no environment and a warm container reuses its clients."""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from lambdas.composition import Adapters
from lambdas.settings import Settings, load_settings
from lambdas.usecases.compliance import ComplianceStores


def share_log_config(logger: Logger) -> None:
    """Give the use cases' and adapters' module loggers (``lambdas.*``) the handler's
    structured JSON formatting, level and correlation id."""
    names = {n for n in logging.root.manager.loggerDict if n.startswith("lambdas.")}
    if names:
        copy_config_to_registered_loggers(source_logger=logger, include=names)


def adapters() -> Adapters:
    """A fresh set of adapters from the environment; each handler caches what it takes
    from it in its own composition root (tests clear those caches per test)."""
    return Adapters(load_settings())


def compliance_stores(settings: Settings) -> ComplianceStores:
    a = Adapters(settings)
    return ComplianceStores(
        devices=a.devices,
        entries=a.policy_entries,
        clusters=a.clusters,
        overrides=a.overrides,
        connections=a.connections,
        poster=a.poster,
        log=a.policy_log,
        signing=a.policy_signing,
        queue=a.compliance_queue,
    )
