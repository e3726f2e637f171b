"""Registered HTTP services: their definitions, what a health answer means, and the pure
parts of calling one from a step (the URL, secret headers, the captured response).

No I/O here: the poller and the step caller do the HTTP and hand their readings to these rules.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, field_validator

from apphub.domain.base import ApiModel, JsonObject, Name, Slug, UtcTime
from apphub.domain.workflows import SecretHeader

ServiceStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
SERVICE_STATUSES: tuple[ServiceStatus, ...] = ("healthy", "degraded", "unhealthy", "unknown")

DEFAULT_HEALTH_PATH = "/health"
DEFAULT_SERVICE_TIMEOUT_MS = 30_000
"""A service step's timeout when it sets no `timeoutMs`."""
RESPONSE_TEXT_LIMIT = 8192
"""Characters of a non-JSON response body kept in the step's result."""
RESPONSE_READ_LIMIT = 1024 * 1024
"""Bytes of a response read at most; a larger JSON body is kept as cut text instead."""
MASK = "***"

HealthPath = Annotated[
    str,
    StringConstraints(
        pattern=r"^/([^/\s#\x00-\x1f\x7f][^\s#\x00-\x1f\x7f]*)?$", min_length=1, max_length=500
    ),
]
"""A path on the service: one leading slash (`//host` would leave it), no control characters."""


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, and no credentials, query or fragment (those belong in
    secret headers and step requests, where they are masked and templated)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises here
    except ValueError as error:
        raise ValueError(f"baseUrl is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("baseUrl must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("baseUrl must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("baseUrl must not carry credentials; send them as a secret header")
    if "?" in url or "#" in url:  # even an empty one: request paths would land in it
        raise ValueError("baseUrl must not have a query or a fragment")
    return url.rstrip("/")


class _ServiceFields(ApiModel):
    display_name: Name | None = None
    base_url: str = Field(min_length=1, max_length=2000)
    health_path: HealthPath = DEFAULT_HEALTH_PATH
    metadata: JsonObject | None = None

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        return check_base_url(url)


class ServiceSpec(_ServiceFields):
    """The body of `POST /services`."""

    slug: Slug


class ServicePatch(ApiModel):
    """The body of `PATCH /services/{slug}`: any subset of the settable fields."""

    display_name: Name | None = None
    base_url: str | None = Field(default=None, min_length=1, max_length=2000)
    health_path: HealthPath | None = None
    metadata: JsonObject | None = None

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        return None if url is None else check_base_url(url)


class Service(ApiModel):
    """A registered service as stored and served, with what the last health check saw.

    Read as stored, not re-validated: a row written under older rules must still load (the
    poller then fails that service's own check rather than every read of the registry)."""

    id: str
    slug: str
    display_name: str | None = None
    base_url: str
    health_path: str
    metadata: JsonObject | None = None
    status: ServiceStatus
    status_message: str | None = None
    last_checked_at: UtcTime | None = None
    latency_ms: int | None = None
    created_at: UtcTime
    updated_at: UtcTime


# --- health -----------------------------------------------------------------------------------

DEGRADED_WORDS = frozenset({"degraded", "warn", "warning"})
UNHEALTHY_WORDS = frozenset({"unhealthy", "down", "fail", "failed", "error"})


@dataclass(frozen=True, slots=True)
class HealthReading:
    """What one health request saw: a status code and body, or the error that stopped it."""

    status_code: int | None
    body: str = ""
    error: str | None = None
    latency_ms: int | None = None


def classify_health(reading: HealthReading) -> tuple[ServiceStatus, str | None]:
    """A 2xx answer is healthy unless its JSON `status` says degraded or down; anything else
    (another status code, a timeout, a refused connection) is unhealthy."""
    if reading.error is not None or reading.status_code is None:
        return "unhealthy", reading.error or "no answer"
    if not 200 <= reading.status_code < 300:
        return "unhealthy", f"health check answered {reading.status_code}"
    word = _status_word(reading.body)
    if word in DEGRADED_WORDS:
        return "degraded", f"health check says {word!r}"
    if word in UNHEALTHY_WORDS:
        return "unhealthy", f"health check says {word!r}"
    return "healthy", None


def _status_word(body: str) -> str | None:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return None
    status = parsed.get("status") if isinstance(parsed, dict) else None
    return status.strip().lower() if isinstance(status, str) else None


def refusal(status: ServiceStatus, require_healthy: bool, allow_degraded: bool) -> str | None:
    """Why a step must not call a service in this state, or None when it may."""
    if not require_healthy or status == "healthy":
        return None
    if status == "degraded" and allow_degraded:
        return None
    return f"is {status}"


# --- calling ----------------------------------------------------------------------------------


def service_url(base_url: str, path: str) -> str:
    """The base URL joined with a step's path; a path may not leave the service's host."""
    if "://" in path or path.startswith("//"):
        raise ValueError(f"request path {path!r} must be a path on the service, not a URL")
    if _has_control_characters(path):
        raise ValueError(f"request path {path!r} holds control characters")
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


def _has_control_characters(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


def _sendable_header_value(value: str) -> bool:
    """What every HTTP client can send: printable ASCII and tabs (no CR/LF, no other bytes)."""
    return all(char == "\t" or 0x20 <= ord(char) < 0x7F for char in value)


HeaderSpec = Mapping[str, str | SecretHeader]


class MissingSecretError(ValueError):
    """A secret header names an environment variable that is not set (the key, never a value)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"secret {key} is not set in the environment of the worker")
        self.key = key


class UnsendableHeaderError(ValueError):
    """A header value no HTTP client can send; the message names the header (and the secret's
    key), never the value: an HTTP library's own message would quote it."""

    def __init__(self, name: str, secret_key: str | None = None) -> None:
        source = f" (from secret {secret_key})" if secret_key else ""
        super().__init__(
            f"header {name}{source} holds characters a header cannot carry "
            "(a line break, a control character or non-ASCII text)"
        )


def masked_headers(headers: HeaderSpec) -> dict[str, str]:
    """Headers as they may be stored, logged and published: every secret value is `***`."""
    return {
        name: MASK if isinstance(value, SecretHeader) else value for name, value in headers.items()
    }


def resolve_headers(headers: HeaderSpec, environment: Mapping[str, str]) -> dict[str, str]:
    """Headers as they are sent: secrets read from `environment` at call time."""
    resolved = {}
    for name, value in headers.items():
        secret_key = None
        if isinstance(value, SecretHeader):
            secret_key = value.secret.key
            secret = environment.get(secret_key)
            if secret is None:
                raise MissingSecretError(secret_key)
            value = f"{value.prefix or ''}{secret}"
        if not _sendable_header_value(value):
            raise UnsendableHeaderError(name, secret_key)
        resolved[name] = value
    return resolved


def secret_values(headers: HeaderSpec, resolved: Mapping[str, str]) -> list[str]:
    """The sent values of secret headers, to scrub from any message that might quote them."""
    return [resolved[name] for name, value in headers.items() if isinstance(value, SecretHeader)]


def captured_response(
    status_code: int, headers: Mapping[str, str], content: bytes, truncated: bool
) -> dict[str, Any]:
    """`{statusCode, headers, body}`: the body parsed when it is JSON, else text cut to 8,192
    characters. `truncated` says the read stopped at RESPONSE_READ_LIMIT."""
    text = content.decode("utf-8", errors="replace")
    body: Any = text[:RESPONSE_TEXT_LIMIT]
    if not truncated and _looks_like_json(headers, text):
        with contextlib.suppress(ValueError):
            body = json.loads(text)
    return {"statusCode": status_code, "headers": dict(headers), "body": body}


def _looks_like_json(headers: Mapping[str, str], text: str) -> bool:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if "json" in content_type.lower():
        return True
    return not content_type and text.lstrip()[:1] in ("{", "[")
