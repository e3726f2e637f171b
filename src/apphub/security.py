"""Operator tokens and scopes; shared by the API (checking) and the CLI (sending)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCOPES = frozenset(
    {
        "jobs:write",
        "jobs:run",
        "workflows:write",
        "workflows:run",
        "events:publish",
        "services:write",
        "admin:read",
        "admin:write",
    }
)
ALL_SCOPES = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may do; `scopes=None` means every scope."""

    subject: str
    scopes: frozenset[str] | None

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


@dataclass(frozen=True, slots=True)
class OperatorToken:
    token: str
    principal: Principal


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenRegistry:
    """Looks tokens up by their SHA-256, so a lookup's timing says nothing about a token."""

    def __init__(self, tokens: Iterable[OperatorToken]) -> None:
        self._by_digest = {_digest(entry.token): entry.principal for entry in tokens}

    def lookup(self, token: str) -> Principal | None:
        return self._by_digest.get(_digest(token))


def read_token_file(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_token_file(path: Path) -> str:
    """The operator token of this data dir, created (mode 0600) by the first start."""
    existing = read_token_file(path)
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it between our read and open
        return read_token_file(path) or ensure_token_file(path)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token
