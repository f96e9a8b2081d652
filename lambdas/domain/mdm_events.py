"""Device Services (MDM) events, as posted to ``POST /mdm/v1/events`` (discriminator
``type``). Strict: an unknown field is a client on another version of the interface,
and dropping it silently would hide a posture fact we should be evaluating."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from lambdas.domain.timefmt import to_utc
from seg_contract import normalize_device_id, normalize_user

# MDM device ids are opaque to us; '#' is reserved for our own storage keys.
MdmDeviceId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^#\s][^\s]*$")]
EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
Instant = Annotated[datetime, AfterValidator(to_utc)]
Text = Annotated[str, Field(max_length=256)]


def _user(value: str) -> str:
    user = normalize_user(value)
    if not user:
        raise ValueError("user is empty after normalisation")
    return user


def _device_ids(values: tuple[str, ...]) -> tuple[str, ...]:
    ids = tuple(dict.fromkeys(normalize_device_id(v) for v in values))
    if not all(ids):
        raise ValueError("an EAS device id is empty")
    return ids


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId
    occurred_at: Instant
    mdm_device_id: MdmDeviceId


class EnrollmentEvent(_Event):
    type: Literal["enrollment"] = "enrollment"
    user: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_user)]
    eas_device_ids: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=128)], ...],
        Field(min_length=1, max_length=10),
        AfterValidator(_device_ids),
    ]
    platform: Text = ""
    model: Text = ""
    os_version: Text = ""
    managed: bool = True


class CheckinEvent(_Event):
    type: Literal["checkin"] = "checkin"
    compromised: bool
    encrypted: bool
    passcode: bool
    os_version: Text = ""


class UnenrollmentEvent(_Event):
    type: Literal["unenrollment"] = "unenrollment"


MdmEvent = Annotated[
    EnrollmentEvent | CheckinEvent | UnenrollmentEvent, Field(discriminator="type")
]
MDM_EVENT: TypeAdapter[MdmEvent] = TypeAdapter(MdmEvent)
