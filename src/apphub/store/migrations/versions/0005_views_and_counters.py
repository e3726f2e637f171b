"""Saved event views, and metric counters shared by every process.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import AutoId, Json, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_saved_views",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("owner_subject", sa.String(200), nullable=False),
        sa.Column("filters", Json, nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("apply_count", sa.Integer(), nullable=False),
        sa.Column("last_applied_at", UtcDateTime()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_saved_views"),
        sa.UniqueConstraint("slug", name="uq_event_saved_views_slug"),
    )
    op.create_index("ix_event_saved_views_owner_subject", "event_saved_views", ["owner_subject"])
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("labels", sa.String(500), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", name="pk_metric_counters"),
    )


def downgrade() -> None:
    op.drop_table("metric_counters")
    op.drop_table("event_saved_views")
