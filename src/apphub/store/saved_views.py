"""Saved views of the event log: named filter sets, each owned by the subject that made it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.errors import ConflictError
from apphub.store import events as event_store
from apphub.store.tables import event_saved_views

views = event_saved_views

MAX_SLUG = 100
_SUFFIX_ROOM = 10
"""A derived slug leaves room for `-<n>`, so de-duplicating never breaks the length limit."""
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
WINDOW_MINUTES = 15
SAMPLE_LIMIT = 1000
ERROR_SEVERITIES = ("critical", "error")
FALLBACK_SLUG = "view"
"""For a name without an ASCII letter or digit (`"!!!"`); non-ASCII letters are dropped."""


def slug_from_name(name: str) -> str:
    """`"Failed jobs (prod)"` → `failed-jobs-prod`: lowercase, runs of other characters → `-`."""
    slug = _NOT_SLUG.sub("-", name.lower()).strip("-")
    slug = slug[: MAX_SLUG - _SUFFIX_ROOM].rstrip("-")
    return slug or FALLBACK_SLUG


async def free_slug(connection: AsyncConnection, base: str) -> str:
    """`base` when nobody uses it, else the first of `base-2`, `base-3`, … that is free.

    Slugs hold no `%` or `_`, so `LIKE base-%` matches literally.
    """
    rows = await connection.execute(
        select(views.c.slug).where(or_(views.c.slug == base, views.c.slug.like(f"{base}-%")))
    )
    taken = set(rows.scalars())
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


async def insert_view(connection: AsyncConnection, values: dict[str, Any]) -> Any:
    """Store a new view; a slug that exists already is a ConflictError (409)."""
    try:
        result = await connection.execute(insert(views).values(values).returning(views))
    except IntegrityError:
        raise ConflictError(
            f"slug: a saved view with slug {values['slug']!r} already exists",
            reason="slug_taken",
        ) from None
    return result.one()


async def get_view(connection: AsyncConnection, slug: str) -> Any:
    return (await connection.execute(select(views).where(views.c.slug == slug))).first()


async def visible_views(connection: AsyncConnection, subject: str | None) -> list[Any]:
    """Shared views plus the private views of `subject` (none for an anonymous caller)."""
    seen: ColumnElement[bool] = views.c.shared.is_(True)
    if subject is not None:
        seen = or_(seen, views.c.owner_subject == subject)
    rows = await connection.execute(select(views).where(seen).order_by(views.c.slug))
    return list(rows)


async def update_view(connection: AsyncConnection, slug: str, changes: dict[str, Any]) -> Any:
    """Apply column changes; returns the updated row, or None when the view is gone."""
    result = await connection.execute(
        update(views).where(views.c.slug == slug).values(changes).returning(views)
    )
    return result.first()


async def record_apply(connection: AsyncConnection, slug: str, now: datetime) -> Any:
    """Count one use in the database itself, so concurrent applies are all counted."""
    return await update_view(
        connection, slug, {"apply_count": views.c.apply_count + 1, "last_applied_at": now}
    )


async def delete_view(connection: AsyncConnection, slug: str) -> None:
    await connection.execute(delete(views).where(views.c.slug == slug))


async def recent_activity(
    connection: AsyncConnection, where: event_store.EventFilter, now: datetime
) -> dict[str, Any]:
    """A view's `analytics`: the last 15 minutes in its scope, its own from/to ignored.

    A bounded sample keeps the cost of listing many views on a busy log predictable.
    """
    recent = replace(where, occurred_from=None, occurred_to=None)
    since = now - timedelta(minutes=WINDOW_MINUTES)
    sample = await event_store.sample(connection, recent, since, SAMPLE_LIMIT)
    return activity_of([severity for severity, _ in sample])


def activity_of(severities: list[str]) -> dict[str, Any]:
    """Throughput and error share of a sample (an empty one: zeros, not a division by zero)."""
    sampled = len(severities)
    counts = Counter(severities)
    errors = sum(counts[severity] for severity in ERROR_SEVERITIES)
    return {
        "windowMinutes": WINDOW_MINUTES,
        "eventsPerMinute": round(sampled / WINDOW_MINUTES, 2),
        "errorRatio": round(errors / sampled, 3) if sampled else 0.0,
        "sampledCount": sampled,
        "sampleLimit": SAMPLE_LIMIT,
        "sampleLimitHit": sampled >= SAMPLE_LIMIT,
    }
