"""The model base and the small constrained types every definition shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown keys rejected.

    Rejecting unknown keys turns a typo such as `dependson` into a 400 instead of a
    silently ignored setting.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        serialize_by_alias=True,
        validate_by_alias=True,
        validate_by_name=False,
    )


def iso_ms(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the one time format of the contract."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(value: datetime) -> datetime:
    """`value` cut to whole milliseconds, the precision of every time on the wire."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_iso(value: str) -> datetime:
    """The inverse of `iso_ms` (any ISO-8601 time with an offset or `Z`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def utc_now() -> datetime:
    return datetime.now(UTC)


UtcTime = Annotated[
    datetime,
    PlainSerializer(iso_ms, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]

Slug = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]*$", min_length=1, max_length=100)
]
"""Job, workflow and service slugs: lowercase, URL-safe, up to 100 characters."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]

TimeoutMs = Annotated[int, Field(ge=1000, le=86_400_000)]

JsonObject = dict[str, Any]
