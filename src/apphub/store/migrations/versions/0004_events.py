"""Events: the persisted event log.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import AutoId, Json, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_events",
        sa.Column("seq", AutoId, nullable=False, autoincrement=True),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(256), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("correlation_id", sa.String(256)),
        sa.Column("ttl_ms", sa.BigInteger()),
        sa.Column("metadata", Json),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("available_at", UtcDateTime()),
        sa.PrimaryKeyConstraint("seq", name="pk_workflow_events"),
        sa.UniqueConstraint("id", name="uq_workflow_events_id"),
    )
    for name, columns in (
        ("ix_workflow_events_time", ["occurred_at", "id"]),
        ("ix_workflow_events_type", ["type", "occurred_at", "id"]),
        ("ix_workflow_events_source", ["source", "occurred_at", "id"]),
        ("ix_workflow_events_correlation", ["correlation_id"]),
        ("ix_workflow_events_status", ["status", "available_at"]),
        ("ix_workflow_events_received", ["received_at"]),
    ):
        op.create_index(name, "workflow_events", columns)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_workflow_events_payload", "workflow_events", ["payload"], postgresql_using="gin"
        )


def downgrade() -> None:
    op.drop_table("workflow_events")
