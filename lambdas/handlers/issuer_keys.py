"""Scheduled refresh of token issuers' keys (EventBridge schedule): every cluster's Bearer
issuers are fetched from their ``jwks_uri`` again, and a cluster whose keys changed gets
a new settings version, pushed to its nodes (``lambdas.usecases.token_issuers``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lambdas.composition import Adapters
from lambdas.handlers.skeleton import LambdaFunction, ScheduledEvent, adapters
from lambdas.usecases.token_issuers import refresh_issuer_keys

function = LambdaFunction("issuer_keys", adapters)


@function.scheduled(done="issuer keys refreshed")
def handler(event: ScheduledEvent, a: Adapters, now: datetime) -> dict[str, Any]:
    report = refresh_issuer_keys(stores=a.versions, source=a.jwks, now=now)
    function.count("IssuerKeysChanged", len(report.changed))
    function.count("IssuerKeysFailed", len(report.failed))
    return {"clusters": report.clusters, "changed": report.changed, "failed": report.failed}
