"""One spelling of instants in storage: UTC ISO 8601 with microseconds and a ``Z``.

Fixed width, so strings sort like the instants they name (DynamoDB compares sort keys
and condition operands as strings)."""

from __future__ import annotations

from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_instant(value: datetime) -> str:
    return to_utc(value).strftime(_FORMAT)


def format_optional_instant(value: datetime | None) -> str | None:
    return format_instant(value) if value is not None else None


def parse_instant(text: str) -> datetime:
    return datetime.strptime(text, _FORMAT).replace(tzinfo=UTC)
