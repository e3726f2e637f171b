"""The CLI's HTTP client: finds the server and the token, turns error bodies into messages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from apphub.security import read_token_file
from apphub.settings import Settings


class CliError(Exception):
    """A failure to report on stderr before exiting non-zero."""


def api_client() -> ApiClient:
    """The client of the server the environment names (`APPHUB_URL`, else host and port)."""
    return ApiClient.from_env(Settings.from_env())


@dataclass
class ApiClient:
    base_url: str
    token: str | None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, settings: Settings) -> ApiClient:
        base_url = os.environ.get("APPHUB_URL") or f"http://{settings.host}:{settings.port}"
        token = os.environ.get("APPHUB_TOKEN") or read_token_file(settings.token_file)
        return cls(base_url.rstrip("/"), token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the body's `data` (or the whole body if it has none)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except httpx.TransportError as error:
            raise CliError(
                f"cannot reach apphub at {self.base_url} ({error}); is `apphub serve` running?"
            ) from None
        body = _json(response)
        if response.is_error:
            raise CliError(_error_message(response.status_code, body))
        if isinstance(body, dict) and "data" in body:
            return body["data"]
        return body

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, payload: Any) -> Any:
        return self.request("POST", path, json=payload)

    def patch(self, path: str, payload: Any) -> Any:
        return self.request("PATCH", path, json=payload)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_message(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = f"{body['error']} (HTTP {status})"
        problems = (
            (body.get("detail") or {}).get("errors")
            if isinstance(body.get("detail"), dict)
            else None
        )
        if problems and len(problems) > 1:
            message += "".join(f"\n  {p['field']}: {p['message']}" for p in problems)
        return message
    return f"HTTP {status}"
