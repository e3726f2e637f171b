"""Envelope and error models, so `/openapi.json` describes the bodies the routes send."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from apphub.domain.base import ApiModel

T = TypeVar("T")


class Data(BaseModel, Generic[T]):
    """Every success body: `{"data": ...}`."""

    data: T


class ErrorBody(BaseModel):
    error: str
    reason: str | None = None
    detail: Any = None
    data: Any = None


class Page(ApiModel):
    next_cursor: str | None
    has_more: bool
    limit: int


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


Responses = dict[int | str, dict[str, Any]]

BAD_INPUT: Responses = {400: _error("Bad input: the message names the field and the rule")}
NOT_FOUND: Responses = {404: _error("Unknown resource")}
CONFLICT: Responses = {409: _error("Conflicts with what exists")}
GUARDED: Responses = {
    401: _error("No credentials"),
    403: _error("Unknown token or missing scope"),
}
