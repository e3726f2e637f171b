"""The one error shape of the API: `{"error", "reason"?, "detail"?}`, 400 for bad input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from apphub.domain.assets import PARTITIONING_TAGS
from apphub.domain.errors import ApphubError, ConflictError, DefinitionError, NotFoundError
from apphub.domain.workflows import STEP_TAGS

log = structlog.get_logger(__name__)

_LOCATION_PREFIXES = frozenset({"body", "query", "path", "header"})


class ApiError(Exception):
    """An error answered as-is; raise it from routes for statuses the domain does not name."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        reason: str | None = None,
        detail: Any = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.reason = reason
        self.detail = detail
        self.data = data


def error_body(
    message: str, *, reason: str | None = None, detail: Any = None, data: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if reason is not None:
        body["reason"] = reason
    if detail is not None:
        body["detail"] = detail
    if data is not None:
        body["data"] = data
    return body


def field_path(location: Sequence[int | str]) -> str:
    """`("body", "steps", 0, "job", "dependsOn")` → `steps[0].dependsOn`."""
    parts = list(location)
    if parts and parts[0] in _LOCATION_PREFIXES:
        parts = parts[1:]
    path = ""
    previous: int | str | None = None
    for part in parts:
        if not _is_union_tag(part, previous):
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
        previous = part
    return path or "body"


def _is_union_tag(part: int | str, previous: int | str | None) -> bool:
    """pydantic names the union member it tried (`job`, `static`, ...); no client wrote that key."""
    if previous == "partitioning":
        return part in PARTITIONING_TAGS
    return part in STEP_TAGS and (isinstance(previous, int) or previous == "template")


def validation_problem(errors: Sequence[Any]) -> dict[str, Any]:
    """Turn pydantic's error list into our body, naming each field and the rule it broke."""
    problems = []
    for error in errors:
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "malformed")
            problems.append(
                {"field": "body", "rule": "json_invalid", "message": f"not valid JSON ({detail})"}
            )
            continue
        field = field_path(error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append({"field": field, "rule": error.get("type", "invalid"), "message": message})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    summary = f"{first['field']}: {first['message']}"
    if len(problems) > 1:
        summary += f" (and {len(problems) - 1} more)"
    return error_body(summary, reason="validation_failed", detail={"errors": problems})


_DOMAIN_STATUS: tuple[tuple[type[ApphubError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (DefinitionError, 400),
)


def status_for(error: BaseException) -> int:
    """The status an error will be answered with (for the audit log, before it is answered)."""
    if isinstance(error, ApiError | HTTPException):
        return error.status_code
    if isinstance(error, RequestValidationError | ValidationError):
        return 400
    if isinstance(error, ApphubError):
        return next((code for kind, code in _DOMAIN_STATUS if isinstance(error, kind)), 400)
    return 500


def describe(error: BaseException) -> str:
    """The message a client will read for `error`, for the audit log."""
    if isinstance(error, ApiError | ApphubError):
        return error.message
    if isinstance(error, RequestValidationError | ValidationError):
        return str(validation_problem(error.errors())["error"])
    if isinstance(error, HTTPException):
        return str(error.detail)
    return "internal server error"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        body = error_body(error.message, reason=error.reason, detail=error.detail, data=error.data)
        return JSONResponse(body, status_code=error.status_code)

    @app.exception_handler(ApphubError)
    async def _domain_error(_: Request, error: ApphubError) -> JSONResponse:
        data = (
            error.data.model_dump(mode="json") if hasattr(error.data, "model_dump") else error.data
        )
        body = error_body(error.message, reason=error.reason, detail=error.detail, data=data)
        return JSONResponse(body, status_code=status_for(error))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_problem(error.errors()), status_code=400)

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, error: ValidationError) -> JSONResponse:
        return JSONResponse(validation_problem(error.errors()), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        # Only Starlette's own phrases ("Not Found", ...) arrive here; routes raise ApiError.
        message = error.detail.lower() if isinstance(error.detail, str) else "request failed"
        return JSONResponse(
            error_body(message),
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return JSONResponse(error_body("internal server error"), status_code=500)
