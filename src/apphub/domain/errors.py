"""Errors raised by pure rules and repositories; the shells map them to HTTP statuses."""

from __future__ import annotations

from typing import Any


class ApphubError(Exception):
    """Base of the errors a client can cause; `message` is safe to show to the client."""

    def __init__(
        self, message: str, *, reason: str | None = None, detail: Any = None, data: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.detail = detail
        self.data = data
        """A resource the client should see with the error (the run that holds a run key)."""


class DefinitionError(ApphubError):
    """A definition that parses but breaks a rule (a cycle, an unknown job, ...)."""


class NotFoundError(ApphubError):
    """The named resource does not exist."""


class ConflictError(ApphubError):
    """The request clashes with what exists (a taken slug, an active run key)."""
