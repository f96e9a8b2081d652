"""Bodies of the messages on the compliance queue (SQS FIFO), one JSON object each,
discriminated by ``type``. The queue carries *what to re-evaluate*, never the state
itself: the reader reads the current device record and override when it runs, so a
message processed twice or late still writes the newest state."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from lambdas.domain.access import OverrideAction
from lambdas.domain.mdm_events import MdmDeviceId
from lambdas.domain.timefmt import to_utc
from seg_contract import normalize_device_id, normalize_user

ClusterId = Annotated[str, Field(min_length=1, max_length=64)]


def _nonempty(normalised: str) -> str:
    if not normalised:
        raise ValueError("must not be empty after normalisation")
    return normalised


def _norm_user(value: str) -> str:
    return _nonempty(normalize_user(value))


def _norm_device(value: str) -> str:
    return _nonempty(normalize_device_id(value))


User = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_norm_user)]
DeviceId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_norm_device)]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EvaluateDevice(_Message):
    """Re-evaluate an MDM device and write its entries (all clusters, or one)."""

    type: Literal["evaluate_device"] = "evaluate_device"
    mdm_device_id: MdmDeviceId
    reason: Annotated[str, Field(max_length=64)]  # enrollment | checkin | ... | stale_checkin
    event_id: Annotated[str, Field(max_length=160)] = ""
    cluster_id: ClusterId | None = None  # None: every cluster


class ManualOverrideRequest(_Message):
    """An admin's allow / block / clear for one email device, from the console."""

    type: Literal["manual_override"] = "manual_override"
    user: User
    device_id: DeviceId
    action: OverrideAction
    reason: Annotated[str, Field(max_length=256)] = ""
    actor: Annotated[str, Field(max_length=256)] = ""
    requested_at: Annotated[datetime, AfterValidator(to_utc)]
    request_id: Annotated[str, Field(min_length=1, max_length=64)]


class EvaluateEmailDevice(_Message):
    """Re-evaluate one email device (e.g. to seed a new cluster with an override-only
    device the MDM does not know)."""

    type: Literal["evaluate_email_device"] = "evaluate_email_device"
    user: User
    device_id: DeviceId
    cluster_id: ClusterId | None = None


class ReevaluateAll(_Message):
    """Re-evaluate every MDM device, then every override-only email device, one page per
    message: the reader queues the page's evaluations and a continuation message, so no
    single invocation has to walk the whole tenant (e.g. to seed a new cluster)."""

    type: Literal["reevaluate_all"] = "reevaluate_all"
    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Annotated[str, Field(max_length=64)]
    cluster_id: ClusterId | None = None  # None: every cluster
    phase: Literal["devices", "overrides"] = "devices"
    cursor: Annotated[str, Field(max_length=4096)] | None = None


ComplianceMessage = Annotated[
    EvaluateDevice | ManualOverrideRequest | EvaluateEmailDevice | ReevaluateAll,
    Field(discriminator="type"),
]
COMPLIANCE_MESSAGE: TypeAdapter[ComplianceMessage] = TypeAdapter(ComplianceMessage)


# --- FIFO message group and deduplication ids ------------------------------------------
# SQS allows 1-128 printable ASCII characters; entry keys contain \x1f and MDM ids are
# opaque, so anything else is hashed.

_SQS_ID_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


def sqs_id(prefix: str, raw: str) -> str:
    """``prefix`` + ``raw`` when that is a valid SQS group/dedup id, else a hash of it."""
    candidate = f"{prefix}{raw}"
    if len(candidate) <= 128 and raw and set(candidate) <= _SQS_ID_CHARS:
        return candidate
    return prefix + hashlib.sha256(raw.encode("utf-8")).hexdigest()


def device_group(mdm_device_id: str) -> str:
    """One message group per MDM device: its changes are evaluated in order."""
    return sqs_id("dev-", mdm_device_id)


def email_device_group(user: str, device_id: str) -> str:
    """Overrides of one email device stay in order (block, then clear)."""
    return sqs_id("ed-", f"{user}\x1f{device_id}")
