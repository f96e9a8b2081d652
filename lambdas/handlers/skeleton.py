"""The one shape of a Lambda handler: ``LambdaFunction`` gives a function its powertools
(a logger with the event's correlation id, a tracer, EMF metrics), its composition root
(built on the first invocation, reused while the container is warm), its clock, and the
one mapping from the domain's typed errors to what the trigger expects back.

A handler module declares one function and one use-case call::

    function = LambdaFunction("ws_disconnect", lambda: adapters().connections)

    @function.websocket(malformed="malformed $disconnect event", refused_metric="...")
    def handler(event: WebSocketEvent, connections: ConnectionStore, now: datetime) -> None:
        ...

Three triggers, three answers:

- ``websocket``: the route event parsed into ``WebSocketEvent``; ``{"statusCode": 200}``
  when the use case returns, 400 for an event that does not parse, and the status of a
  refused request (``websocket_refusal``) for ``Unauthenticated``, ``Forbidden`` and
  ``InvalidInput``. Any other error is raised (an invocation error, as API Gateway
  expects of a failing route).
- ``sqs``: each record's body parsed by ``parse`` and handled on its own; a record that
  raises is reported in ``batchItemFailures`` by the function's own processor (plain or
  FIFO, each with its own partial-batch semantics).
- ``scheduled``: the schedule's event read into ``ScheduledEvent``; the use case's
  summary is logged and returned, a failure is logged and raised (EventBridge retries it
  and the function's error alarm counts it).

Tracing never records a response or an exception (``capture_response=False,
capture_error=False`` on every subsegment): a response can carry a newly issued
credential, and traces are readable by more people than those secrets are for.

Tests replace the clock (``function.clock``) and the composition root
(``function.root``; ``function.root.cache_clear()`` rebuilds it from the environment).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Generic, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BasePartialBatchProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from lambdas.composition import Adapters
from lambdas.domain.errors import Forbidden, InvalidInput, Unauthenticated, UseCaseError
from lambdas.handlers.ws_events import WebSocketEvent, response
from lambdas.settings import load_settings
from lambdas.usecases.gateway_auth import CREDENTIAL_REJECTIONS
from seg_contract.http import CREDENTIAL_REJECTED_HEADER, CREDENTIAL_REJECTED_VALUE

NAMESPACE = "SEG"

Event = dict[str, Any]
Answer = dict[str, Any]
Handler = Callable[[Event, LambdaContext], Answer]

RootT = TypeVar("RootT")
MessageT = TypeVar("MessageT")
ResultT = TypeVar("ResultT")

# The WebSocket routes' answer to each refused request, checked in order (a subclass
# before its base). Anything else a use case raises fails the invocation.
WEBSOCKET_STATUS: tuple[tuple[type[UseCaseError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (InvalidInput, 400),
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def adapters() -> Adapters:
    """Every adapter from the environment (``lambdas.composition``); a function's root
    takes what it needs from it once per warm container."""
    return Adapters(load_settings())


def share_log_config(logger: Logger) -> None:
    """Give the use cases' and adapters' module loggers (``lambdas.*``) the handler's
    structured JSON formatting, level and correlation id."""
    names = {n for n in logging.root.manager.loggerDict if n.startswith("lambdas.")}
    if names:
        copy_config_to_registered_loggers(source_logger=logger, include=names)


def websocket_refusal(exc: UseCaseError) -> Answer | None:
    """A WebSocket route's answer to a refused request, or None when ``exc`` is not a
    refusal. A refused gateway credential is marked so a node can tell our 401/403 from
    a proxy's."""
    for kind, status in WEBSOCKET_STATUS:
        if isinstance(exc, kind):
            rejected = isinstance(exc, CREDENTIAL_REJECTIONS)
            headers = {CREDENTIAL_REJECTED_HEADER: CREDENTIAL_REJECTED_VALUE} if rejected else None
            return response(status, exc.detail, headers)
    return None


@dataclass(frozen=True)
class ScheduledEvent:
    """What a scheduled function reads of its event: the EventBridge event's id (the
    correlation id) and, for a run started by hand, ``rebuild``. Lenient: a hand-made
    event may be anything."""

    id: str = ""
    rebuild: bool = False

    @classmethod
    def parse(cls, event: Any) -> ScheduledEvent:
        if not isinstance(event, dict):
            return cls()
        return cls(id=str(event.get("id") or ""), rebuild=bool(event.get("rebuild")))


class LambdaFunction(Generic[RootT]):
    """One Lambda function: its powertools, its cached composition root and its clock."""

    def __init__(self, service: str, root: Callable[[], RootT]) -> None:
        self.logger = Logger(service=service)
        self.metrics = Metrics(namespace=NAMESPACE, service=service)
        self.tracer = Tracer(service=service)
        share_log_config(self.logger)
        # Built on first use, after the environment is in place: importing a handler
        # needs no environment, and a warm container reuses its clients.
        self.root = cache(root)
        self.clock: Callable[[], datetime] = utc_now

    def count(self, name: str, value: float = 1) -> None:
        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def entry(
        self, correlation_id_path: str | None = None
    ) -> Callable[
        [Callable[[Event, LambdaContext], ResultT]], Callable[[Event, LambdaContext], ResultT]
    ]:
        """The powertools around a raw handler: logger (state cleared per invocation),
        tracer (no response, no error recorded), metrics flushed at the end."""

        def wrap(
            handler: Callable[[Event, LambdaContext], ResultT],
        ) -> Callable[[Event, LambdaContext], ResultT]:
            traced = self.tracer.capture_lambda_handler(
                capture_response=False, capture_error=False
            )(handler)
            logged = self.logger.inject_lambda_context(
                clear_state=True, correlation_id_path=correlation_id_path
            )(self.metrics.log_metrics(traced))
            return logged  # type: ignore[no-any-return]

        return wrap

    # --- the triggers -------------------------------------------------------------------

    def websocket(
        self, *, malformed: str, refused: str, refused_metric: str
    ) -> Callable[[Callable[[WebSocketEvent, RootT, datetime], None]], Handler]:
        """A WebSocket route: ``use`` returns (200) or raises a refusal (see module doc);
        every refusal is logged as ``refused`` and counted as ``refused_metric``."""

        def declare(use: Callable[[WebSocketEvent, RootT, datetime], None]) -> Handler:
            def refuse(answer: Answer) -> Answer:
                self.count(refused_metric)
                self.logger.warning(
                    refused, extra={"status": answer["statusCode"], "detail": answer.get("body")}
                )
                return answer

            @self.entry("requestContext.connectionId")
            def handler(event: Event, context: LambdaContext) -> Answer:
                try:
                    parsed = WebSocketEvent.model_validate(event)
                except ValidationError:
                    return refuse(response(400, malformed))
                try:
                    use(parsed, self.root(), self.clock())
                except UseCaseError as exc:
                    answer = websocket_refusal(exc)
                    if answer is None:
                        raise
                    return refuse(answer)
                return response(200)

            return handler

        return declare

    def sqs(
        self,
        parse: Callable[[str], MessageT],
        processor: BasePartialBatchProcessor,
    ) -> Callable[[Callable[[MessageT, RootT, datetime], None]], Handler]:
        """An SQS-triggered function: each record's body parsed by ``parse`` and given to
        ``use``; a record that raises (including one that does not parse) is a batch item
        failure, with whatever else ``processor`` fails with it."""

        def declare(use: Callable[[MessageT, RootT, datetime], None]) -> Handler:
            @self.tracer.capture_method(capture_response=False, capture_error=False)
            def record_handler(record: SQSRecord) -> None:
                self.logger.append_keys(sqs_message_id=record.message_id)
                use(parse(record.body), self.root(), self.clock())

            @self.entry("Records[0].messageId")
            def handler(event: Event, context: LambdaContext) -> Answer:
                self.count("MessagesReceived", len(event.get("Records", [])))
                answer = process_partial_response(
                    event=event, record_handler=record_handler, processor=processor, context=context
                )
                self.count("MessagesFailed", len(answer.get("batchItemFailures", [])))
                return dict(answer)

            return handler

        return declare

    def scheduled(
        self, *, done: str
    ) -> Callable[[Callable[[ScheduledEvent, RootT, datetime], Answer]], Handler]:
        """A scheduled function: ``use`` returns its summary (logged as ``done`` and
        returned); a failure is logged and raised."""

        def declare(use: Callable[[ScheduledEvent, RootT, datetime], Answer]) -> Handler:
            @self.entry("id")
            def handler(event: Event, context: LambdaContext) -> Answer:
                try:
                    result = use(ScheduledEvent.parse(event), self.root(), self.clock())
                except Exception:
                    self.logger.exception("scheduled run failed")
                    raise
                self.logger.info(done, extra=result)
                return result

            return handler

        return declare
