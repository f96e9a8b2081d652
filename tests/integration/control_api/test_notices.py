"""Notices to users, end to end on moto: a device the gateway starts refusing gets one
e-mail through SES (its reason in plain words, its cluster's remediation text), once per
state change whatever the redeliveries, none when an admin turned notices off."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from lambdas import resources
from lambdas.handlers import notice_sender, payload_reader
from lambdas.settings import load_settings
from tests.integration.control_api.conftest import Ctx, register, sqs_event
from tests.support.events import LambdaContext

SENDER = "it-notices@example.com"
T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def sent() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


@pytest.fixture
def notices(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ctx]:
    monkeypatch.setenv(resources.ENV_NOTICE_SENDER, SENDER)
    load_settings.cache_clear()
    boto3.client("sesv2").create_email_identity(EmailIdentity=SENDER)
    payload_reader.function.root.cache_clear()
    notice_sender.function.root.cache_clear()
    yield ctx
    payload_reader.function.root.cache_clear()
    notice_sender.function.root.cache_clear()


def configure(ctx: Ctx, cluster_id: str, **more: Any) -> None:
    settings = {
        **ctx.client.get("/console/v1/notices", headers=ctx.viewer()).json(),
        "mail_domain": "example.com",
        "remediation": {cluster_id: "Open the Company Portal app and fix what it lists."},
        **more,
    }
    response = ctx.client.put("/console/v1/notices", json=settings, headers=ctx.admin())
    assert response.status_code == 200, response.text


def report(ctx: Ctx, credential: str, decision: str, at: datetime, **more: Any) -> dict[str, Any]:
    """A gateway batch for bob's phone, received at ``at``, through the payload reader;
    returns the SQS event (to deliver it again)."""
    event = {
        "event_id": uuid.uuid4().hex,
        "at": at.isoformat(),
        "node_id": "node-1",
        "user": "bob",
        "device_id": "BOBPIXEL8",
        "device_type": "Android",
        "command": "Sync",
        "decision": decision,
        "reason": "non-compliant: compromised (jailbroken or rooted)"
        if decision != "allow"
        else "",
        "rule": "entry",
        **more,
    }
    from lambdas.usecases.access_events import PayloadMessage  # noqa: PLC0415

    message = PayloadMessage(
        cluster_id=credential.split("_")[1],
        received_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        batch={"node_id": "node-1", "events": [event]},  # type: ignore[arg-type]
    )
    queue_url = ctx.aws.queues["payload"]
    ctx.aws.sqs.send_message(QueueUrl=queue_url, MessageBody=message.model_dump_json())
    delivery = sqs_event(ctx.aws, "payload")
    assert payload_reader.handler(delivery, LambdaContext()) == {"batchItemFailures": []}
    return delivery


def send_notices(ctx: Ctx) -> list[dict[str, Any]]:
    delivery = sqs_event(ctx.aws, "notices")
    if not delivery["Records"]:
        return []
    assert notice_sender.handler(delivery, LambdaContext()) == {"batchItemFailures": []}
    return [json.loads(r["body"]) for r in delivery["Records"]]


def test_a_blocked_device_gets_one_notice_with_reason_and_remediation(notices: Ctx) -> None:
    ctx = notices
    cluster_id, credential = register(ctx)
    configure(ctx, cluster_id)
    report(ctx, credential, "allow", T0)
    assert send_notices(ctx) == [] and sent() == []
    delivery = report(ctx, credential, "block", T0 + timedelta(minutes=1))
    assert len(send_notices(ctx)) == 1
    [mail] = sent()
    assert mail.source == SENDER
    assert mail.destinations == {"ToAddresses": ["bob@example.com"]}
    assert mail.subject == "Your Android is blocked from company mail"
    assert "Hello bob," in mail.body
    assert "(Android, ID bobpixel8) is blocked from company e-mail since 2026-11-27 03:01 UTC" in (
        mail.body
    )
    assert (
        "Why: This device does not meet your organisation's security requirements: "
        "compromised (jailbroken or rooted)." in mail.body
    )
    assert "What to do: Open the Company Portal app and fix what it lists." in mail.body
    # The same batch again, then the same block seen later: no second notice.
    assert payload_reader.handler(delivery, LambdaContext()) == {"batchItemFailures": []}
    report(ctx, credential, "block", T0 + timedelta(minutes=2))
    assert send_notices(ctx) == [] and len(sent()) == 1
    page = ctx.client.get("/console/v1/email-devices/bob/BOBPIXEL8", headers=ctx.viewer()).json()
    assert (page["notice"]["state"], page["notice"]["outcome"]) == ("block", "sent")
    # Fixed, then blocked again: a new change, a new notice.
    report(ctx, credential, "allow", T0 + timedelta(minutes=3))
    report(ctx, credential, "quarantine", T0 + timedelta(minutes=4), rule="rule:android-14")
    send_notices(ctx)
    assert len(sent()) == 2
    assert "quarantined" in sent()[1].subject
    assert "not allowed to sync company mail" in sent()[1].body


def test_a_duplicate_notice_message_sends_once(notices: Ctx) -> None:
    ctx = notices
    cluster_id, credential = register(ctx)
    configure(ctx, cluster_id)
    report(ctx, credential, "block", T0)
    delivery = sqs_event(ctx.aws, "notices")
    assert notice_sender.handler(delivery, LambdaContext()) == {"batchItemFailures": []}
    assert notice_sender.handler(delivery, LambdaContext()) == {"batchItemFailures": []}
    assert len(sent()) == 1


def test_turned_off_or_without_an_address_nothing_is_sent(notices: Ctx) -> None:
    ctx = notices
    cluster_id, credential = register(ctx)
    configure(ctx, cluster_id, enabled=False)
    report(ctx, credential, "block", T0)
    send_notices(ctx)
    assert sent() == []
    page = ctx.client.get("/console/v1/email-devices/bob/BOBPIXEL8", headers=ctx.viewer()).json()
    assert page["notice"]["outcome"] == "skipped: notices are turned off"
    configure(ctx, cluster_id, enabled=True, mail_domain="")
    report(ctx, credential, "allow", T0 + timedelta(minutes=1))
    report(ctx, credential, "block", T0 + timedelta(minutes=2))
    send_notices(ctx)
    assert sent() == []
    page = ctx.client.get("/console/v1/email-devices/bob/BOBPIXEL8", headers=ctx.viewer()).json()
    assert page["notice"]["outcome"].startswith("skipped: no e-mail address")
