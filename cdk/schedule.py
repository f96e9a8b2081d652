"""EventBridge rules for the functions declared with ``Trigger.SCHEDULE``."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from lambdas import resources


class Schedules(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, functions: dict[str, lambda_.Function]
    ) -> None:
        super().__init__(scope, construct_id)
        self.rules: dict[str, events.Rule] = {}
        for declared in resources.FUNCTIONS:
            if declared.trigger is not resources.Trigger.SCHEDULE:
                continue
            if not declared.schedule_minutes:
                raise ValueError(f"function {declared.id} is scheduled but has no interval")
            self.rules[declared.id] = events.Rule(
                self,
                declared.id,
                description=declared.purpose,
                schedule=events.Schedule.rate(Duration.minutes(declared.schedule_minutes)),
                targets=[targets.LambdaFunction(functions[declared.id], retry_attempts=2)],
            )
