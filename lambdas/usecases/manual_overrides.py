"""Queue an admin's manual allow / block / clear for one email device.

Like the seed's "manual updates from the console", the request goes through the
compliance queue: the compliance reader stores the override, re-evaluates the device
and pushes the new entry to every node of every cluster. Overrides of one email device
share a FIFO message group, so "block, then clear" is applied in that order."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ValidationError

from lambdas.domain.errors import InvalidInput, validation_problems
from lambdas.domain.messages import ManualOverrideRequest, email_device_group
from lambdas.ports import ComplianceQueue


def request_override(
    user: str,
    device_id: str,
    action: str,
    *,
    reason: str,
    actor: str,
    queue: ComplianceQueue,
    now: datetime,
    request_id: str | None = None,
) -> ManualOverrideRequest:
    """Validate and queue the request; ``InvalidInput`` names what is wrong."""
    try:
        message = ManualOverrideRequest(
            user=user,
            device_id=device_id,
            action=action,  # type: ignore[arg-type]  # validated into OverrideAction
            reason=reason,
            actor=actor,
            requested_at=now,
            request_id=request_id or uuid.uuid4().hex,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid override: {validation_problems(exc)}") from exc
    queue.send(
        message.model_dump_json(),
        group_id=email_device_group(message.user, message.device_id),
        dedup_id=message.request_id,
    )
    return message
