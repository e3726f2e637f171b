"""Service steps: call a registered service over HTTP with the step's timeout, refuse an
unhealthy one without calling it, read secrets at call time, capture the response.

The outcome has the shape of a job's (`JobOutcome`), so retries, templates, `storeResponseAs`
and fan-out treat a service step like any other.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from apphub.domain.services import (
    MASK,
    RESPONSE_READ_LIMIT,
    HeaderSpec,
    MissingSecretError,
    Service,
    captured_response,
    refusal,
    resolve_headers,
    secret_values,
    service_url,
)
from apphub.engine.runtimes.base import JobOutcome, elapsed_ms
from apphub.store import services as service_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

ERROR_BODY_PREVIEW = 200
"""Characters of a failed response's body quoted in the step's error message."""


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One attempt of a service step, rendered from its templates; secrets still references."""

    service_slug: str
    method: str
    path: str
    query: Mapping[str, Any] | None
    headers: HeaderSpec
    body: Any
    timeout_s: float
    require_healthy: bool = True
    allow_degraded: bool = False
    capture_response: bool = True


async def read_limited(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a streamed body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


class ServiceCaller:
    """Makes the calls of service steps for one worker, over one pooled HTTP client."""

    def __init__(self, database: Database, environment: Mapping[str, str] | None = None) -> None:
        self.database = database
        self.environment = os.environ if environment is None else environment
        self._client: httpx.AsyncClient | None = None

    async def call(self, call: ServiceCall) -> JobOutcome:
        started = time.monotonic()
        async with self.database.read() as connection:
            service = await service_store.get_service(connection, call.service_slug)
        if service is None:
            return _failed(f"service {call.service_slug!r} is not registered", "unknown-service")
        refused = refusal(service.status, call.require_healthy, call.allow_degraded)
        if refused is not None:
            message = f"service {service.slug!r} {refused}; it was not called"
            return _failed(message, "service-unavailable")
        try:
            headers = resolve_headers(call.headers, self.environment)
            url = service_url(service.base_url, call.path)
        except MissingSecretError as error:
            return _failed(str(error), "missing-secret")
        except ValueError as error:
            return _failed(str(error), "invalid-request")
        outcome = await self._send(
            service, call, url, headers, secret_values(call.headers, headers)
        )
        log.info(
            "service call",
            service=service.slug,
            method=call.method,
            path=call.path,
            outcome=outcome.status,
            reason=outcome.failure_reason,
            duration_ms=elapsed_ms(started),
        )
        return outcome

    async def _send(
        self,
        service: Service,
        call: ServiceCall,
        url: str,
        headers: dict[str, str],
        secrets: list[str],
    ) -> JobOutcome:
        started = time.monotonic()
        try:
            request = self.client.build_request(
                call.method, url, params=_query(call.query), headers=headers, json=call.body
            )
        except (httpx.InvalidURL, ValueError) as error:  # UnicodeError is a ValueError
            message = f"request to service {service.slug!r} cannot be sent: {type(error).__name__}"
            return _failed(message, "invalid-request")
        try:
            async with asyncio.timeout(call.timeout_s):
                response = await self.client.send(request, stream=True)
                try:
                    content, truncated = await read_limited(response, RESPONSE_READ_LIMIT)
                finally:
                    await response.aclose()
        except TimeoutError:
            message = f"service {service.slug!r} did not answer within {call.timeout_s:g} s"
            return _failed(message, "timeout", elapsed_ms(started))
        except httpx.HTTPError as error:
            message = f"could not reach service {service.slug!r}: {_describe(error, secrets)}"
            return _failed(message, "connection-error", elapsed_ms(started))
        captured = captured_response(response.status_code, response.headers, content, truncated)
        duration = elapsed_ms(started)
        if not response.is_success:
            preview = content[:ERROR_BODY_PREVIEW].decode("utf-8", errors="replace").strip()
            message = (
                f"service {service.slug!r} answered {response.status_code} for "
                f"{call.method} {call.path}" + (f": {preview}" if preview else "")
            )
            return _failed(message, "http-status", duration, captured)
        result = captured if call.capture_response else {"statusCode": response.status_code}
        return JobOutcome(status="succeeded", result=result, duration_ms=duration)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Timeouts are the step's, enforced around the whole exchange; no pool limit, so a
            # wide fan-out never spends its steps' timeouts waiting for a connection.
            self._client = httpx.AsyncClient(
                timeout=None,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
            )
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _query(query: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query values as text (a list repeats the key); null leaves the key (or item) out."""
    if not query:
        return None
    return {
        key: [_text(item) for item in value if item is not None]
        if isinstance(value, list)
        else _text(value)
        for key, value in query.items()
        if value is not None
    }


def _text(value: Any) -> str:
    """Scalars as JSON writes them (`true`, `1.5`), strings as they are, objects as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _describe(error: httpx.HTTPError, secrets: list[str]) -> str:
    """The library's message, with any secret it quotes masked (it may quote a header)."""
    text = str(error) or type(error).__name__
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _failed(
    message: str, reason: str, duration_ms: int = 0, result: dict[str, Any] | None = None
) -> JobOutcome:
    return JobOutcome(
        status="failed",
        result=result,
        error_message=message,
        failure_reason=reason,
        duration_ms=duration_ms,
    )
