"""Notice sender (SQS-triggered): e-mails the user of a device that became blocked or
quarantined (``lambdas.usecases.notices``). A record whose send fails is reported in
``batchItemFailures`` alone and retried by SQS (the marker lets only one attempt send).
"""

from __future__ import annotations

from datetime import datetime

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

from lambdas.composition import Adapters
from lambdas.handlers.skeleton import LambdaFunction, adapters
from lambdas.usecases.notices import NoticeMessage, send_notice

function = LambdaFunction("notice_sender", adapters)


@function.sqs(NoticeMessage.model_validate_json, BatchProcessor(event_type=EventType.SQS))
def handler(message: NoticeMessage, a: Adapters, now: datetime) -> None:
    sender = a.settings.notice_sender
    result = send_notice(
        message,
        store=a.notices,
        mailer=a.mailer if sender else None,
        sender=sender,
        now=now,
    )
    function.logger.info(
        "notice handled", extra={"state": message.state, "outcome": result.outcome}
    )
    if result.outcome == "sent":
        function.count("NoticesSent")
