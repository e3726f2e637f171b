"""Bearer-token auth with scopes; every guarded call leaves one audit row with its outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from apphub.api.errors import ApiError, describe, status_for
from apphub.api.state import AppState, app_state
from apphub.domain.base import utc_now
from apphub.security import Principal
from apphub.store.audit import AuditEntry, Outcome, record_audit

log = structlog.get_logger(__name__)

_bearer = HTTPBearer(auto_error=False, description="An operator token (APPHUB_OPERATOR_TOKENS)")
_AUTH_DISABLED = Principal("auth-disabled", None)


def require(scope: str, action: str) -> Any:
    """A dependency for a route that needs `scope`; `action` names the call in the audit log."""

    async def guard(
        request: Request,
        state: Annotated[AppState, Depends(app_state)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> AsyncIterator[Principal]:
        resource = request.url.path
        principal = await _authorize(state, credentials, scope, action, resource)
        try:
            yield principal
        except Exception as error:
            await _audit(
                state,
                principal.subject,
                action,
                resource,
                "failed",
                describe(error),
                status_for(error),
            )
            raise
        await _audit(state, principal.subject, action, resource, "succeeded", None, None)

    return Depends(guard)


async def caller_subject(
    state: Annotated[AppState, Depends(app_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """Who calls an open GET: None without a token; an unknown token is refused (403)."""
    if state.tokens is None:
        return _AUTH_DISABLED.subject
    if credentials is None:
        return None
    principal = state.tokens.lookup(credentials.credentials)
    if principal is None:
        raise ApiError(403, "forbidden")
    return principal.subject


async def _authorize(
    state: AppState,
    credentials: HTTPAuthorizationCredentials | None,
    scope: str,
    action: str,
    resource: str,
) -> Principal:
    if state.tokens is None:
        return _AUTH_DISABLED
    if credentials is None:
        await _audit(state, None, action, resource, "failed", "no credentials", 401)
        raise ApiError(401, "authorization required")
    principal = state.tokens.lookup(credentials.credentials)
    if principal is None:
        await _audit(state, None, action, resource, "failed", "unknown token", 403)
        raise ApiError(403, "forbidden")
    if not principal.allows(scope):
        reason = f"missing scope {scope}"
        await _audit(state, principal.subject, action, resource, "failed", reason, 403)
        raise ApiError(403, "forbidden", detail={"requiredScope": scope})
    return principal


async def _audit(
    state: AppState,
    subject: str | None,
    action: str,
    resource: str,
    outcome: Outcome,
    reason: str | None,
    status_code: int | None,
) -> None:
    entry = AuditEntry(subject, action, resource, outcome, reason, status_code, utc_now())
    async with state.database.write() as connection:
        await record_audit(connection, entry)
    log.info(
        "audit", subject=subject, action=action, resource=resource, outcome=outcome, reason=reason
    )
