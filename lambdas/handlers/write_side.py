"""Composition helpers for the write side's Lambda functions: the adapters each
function needs, built from ``lambdas.settings`` over boto3 clients. Each handler module
calls these once (lazily, inside a cached function) so importing a handler needs no
environment and a warm container reuses its clients."""

from __future__ import annotations

import logging
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from lambdas.adapters.apigw_connections import ApiGatewayConnections
from lambdas.adapters.dynamodb_clusters import DynamoDbClusters
from lambdas.adapters.dynamodb_connections import DynamoDbConnections
from lambdas.adapters.dynamodb_devices import DynamoDbDevices
from lambdas.adapters.dynamodb_manual_overrides import DynamoDbManualOverrides
from lambdas.adapters.dynamodb_policy_entries import DynamoDbPolicyEntries
from lambdas.adapters.sqs_compliance_queue import SqsComplianceQueue
from lambdas.settings import Settings
from lambdas.usecases.compliance import ComplianceStores


def share_log_config(logger: Logger) -> None:
    """Give the use cases' and adapters' module loggers (``lambdas.*``) the handler's
    structured JSON formatting, level and correlation id."""
    names = {n for n in logging.root.manager.loggerDict if n.startswith("lambdas.")}
    if names:
        copy_config_to_registered_loggers(source_logger=logger, include=names)


def dynamodb_client() -> Any:
    return boto3.client("dynamodb")


def poster(settings: Settings) -> ApiGatewayConnections:
    return ApiGatewayConnections(settings.websocket_management_endpoint)


def clusters(settings: Settings, client: Any) -> DynamoDbClusters:
    return DynamoDbClusters(settings.table("clusters"), client)


def connections(settings: Settings, client: Any) -> DynamoDbConnections:
    return DynamoDbConnections(settings.table("connections"), client)


def devices(settings: Settings, client: Any) -> DynamoDbDevices:
    return DynamoDbDevices(settings.table("devices"), client)


def compliance_queue(settings: Settings) -> SqsComplianceQueue:
    return SqsComplianceQueue(settings.queue_url("compliance"), boto3.client("sqs"))


def compliance_stores(settings: Settings) -> ComplianceStores:
    client = dynamodb_client()
    return ComplianceStores(
        devices=devices(settings, client),
        entries=DynamoDbPolicyEntries(settings.table("policy_entries"), client),
        clusters=clusters(settings, client),
        overrides=DynamoDbManualOverrides(settings.table("manual_overrides"), client),
        connections=connections(settings, client),
        poster=poster(settings),
        queue=compliance_queue(settings),
    )
