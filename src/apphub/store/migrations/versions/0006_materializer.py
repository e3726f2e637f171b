"""Durable timers and the asset materializer: handled events, claims, cooldowns, decisions.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import AutoId, Json, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _workflow_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workflow_definition_id"],
        ["workflow_definitions.id"],
        name=f"fk_{table}_workflow_definition_id",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "durable_timers",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("claimed_at", UtcDateTime()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_durable_timers"),
        sa.UniqueConstraint("kind", "key", name="uq_durable_timers_identity"),
    )
    op.create_index("ix_durable_timers_due", "durable_timers", ["due_at"])
    op.create_table(
        "materializer_events",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(256), nullable=False),
        sa.Column("handled_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_materializer_events"),
    )
    op.create_index("ix_materializer_events_handled_at", "materializer_events", ["handled_at"])
    op.create_table(
        "materializer_claims",
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("workflow_run_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("cause", Json, nullable=False),
        sa.Column("claimed_at", UtcDateTime(), nullable=False),
        sa.Column("follow_up", Json),
        sa.Column("follow_up_at", UtcDateTime()),
        sa.PrimaryKeyConstraint(
            "workflow_definition_id", "partition_key", name="pk_materializer_claims"
        ),
        sa.UniqueConstraint("workflow_run_id", name="uq_materializer_claims_workflow_run_id"),
        _workflow_fk("materializer_claims"),
    )
    op.create_table(
        "materializer_cooldowns",
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_eligible_at", UtcDateTime()),
        sa.Column("pending", Json),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "workflow_definition_id", "partition_key", name="pk_materializer_cooldowns"
        ),
        _workflow_fk("materializer_cooldowns"),
    )
    op.create_table(
        "materializer_decisions",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(256), nullable=False),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("workflow_slug", sa.String(100), nullable=False),
        sa.Column("asset_id", sa.String(200), nullable=False),
        sa.Column("asset_key", sa.String(200), nullable=False),
        sa.Column("upstream_asset_id", sa.String(200)),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("workflow_run_id", sa.String(36)),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_materializer_decisions"),
        sa.UniqueConstraint(
            "event_id",
            "workflow_definition_id",
            "partition_key",
            name="uq_materializer_decisions_identity",
        ),
    )
    op.create_index(
        "ix_materializer_decisions_workflow",
        "materializer_decisions",
        ["workflow_definition_id", "at"],
    )
    op.create_index(
        "ix_materializer_decisions_asset", "materializer_decisions", ["asset_key", "at"]
    )


def downgrade() -> None:
    for table in (
        "materializer_decisions",
        "materializer_cooldowns",
        "materializer_claims",
        "materializer_events",
        "durable_timers",
    ):
        op.drop_table(table)
