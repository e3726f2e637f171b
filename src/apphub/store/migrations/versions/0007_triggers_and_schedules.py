"""Event triggers, their deliveries and handled events; cron schedules.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import Json, UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    ]


def _workflow_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workflow_definition_id"],
        ["workflow_definitions.id"],
        name=f"fk_{table}_workflow_definition_id",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "workflow_event_triggers",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("event_source", sa.String(200)),
        sa.Column("predicates", Json, nullable=False),
        sa.Column("parameter_template", Json),
        sa.Column("run_key_template", sa.String(500)),
        sa.Column("idempotency_key_expression", sa.String(200)),
        sa.Column("idempotency_ttl_ms", sa.BigInteger(), nullable=False),
        sa.Column("throttle_window_ms", sa.Integer()),
        sa.Column("throttle_count", sa.Integer()),
        sa.Column("max_concurrency", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("metadata", Json),
        sa.Column("paused_until", UtcDateTime()),
        sa.Column("recent_failures", Json),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_event_triggers"),
        _workflow_fk("workflow_event_triggers"),
    )
    op.create_index("ix_event_triggers_type", "workflow_event_triggers", ["event_type", "status"])
    op.create_index(
        "ix_event_triggers_workflow",
        "workflow_event_triggers",
        ["workflow_definition_id", "created_at"],
    )
    op.create_table(
        "workflow_trigger_deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("trigger_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("workflow_run_id", sa.String(36)),
        sa.Column("dedupe_key", sa.String(500)),
        sa.Column("next_attempt_at", UtcDateTime()),
        sa.Column("launched_at", UtcDateTime()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_trigger_deliveries"),
        sa.UniqueConstraint("trigger_id", "event_id", name="uq_trigger_deliveries_identity"),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["workflow_event_triggers.id"],
            name="fk_workflow_trigger_deliveries_trigger_id",
            ondelete="CASCADE",
        ),
    )
    deliveries = "workflow_trigger_deliveries"
    op.create_index("ix_trigger_deliveries_created", deliveries, ["trigger_id", "created_at"])
    op.create_index("ix_trigger_deliveries_launched", deliveries, ["trigger_id", "launched_at"])
    op.create_index(
        "ix_trigger_deliveries_dedupe", deliveries, ["trigger_id", "dedupe_key", "created_at"]
    )
    op.create_index("ix_trigger_deliveries_run", deliveries, ["workflow_run_id"])
    op.create_index("ix_trigger_deliveries_retry", deliveries, ["status", "next_attempt_at"])
    op.create_table(
        "trigger_events",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(256), nullable=False),
        sa.Column("handled_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_trigger_events"),
    )
    op.create_index("ix_trigger_events_handled_at", "trigger_events", ["handled_at"])
    op.create_table(
        "workflow_schedules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("parameters", Json, nullable=False),
        sa.Column("start_window", UtcDateTime()),
        sa.Column("end_window", UtcDateTime()),
        sa.Column("catch_up", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("last_occurrence", UtcDateTime()),
        sa.Column("next_run_at", UtcDateTime()),
        sa.Column("last_run_id", sa.String(36)),
        sa.Column("last_error", sa.Text()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_schedules"),
        _workflow_fk("workflow_schedules"),
    )
    op.create_index(
        "ix_workflow_schedules_workflow",
        "workflow_schedules",
        ["workflow_definition_id", "created_at"],
    )


def downgrade() -> None:
    for table in (
        "workflow_schedules",
        "trigger_events",
        "workflow_trigger_deliveries",
        "workflow_event_triggers",
    ):
        op.drop_table(table)
