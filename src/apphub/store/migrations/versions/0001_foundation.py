"""Foundation: job and workflow definitions, runs, steps, asset declarations, audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import AutoId, Json, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE_RUN = sa.text("status IN ('pending', 'running') AND run_key_normalized IS NOT NULL")


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "job_definitions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("runtime", sa.String(32), nullable=False),
        sa.Column("entry_point", sa.Text(), nullable=False),
        sa.Column("parameters_schema", Json),
        sa.Column("default_parameters", Json, nullable=False),
        sa.Column("output_schema", Json),
        sa.Column("timeout_ms", sa.Integer()),
        sa.Column("retry_policy", Json),
        sa.Column("metadata", Json),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_job_definitions"),
        sa.UniqueConstraint("slug", name="uq_job_definitions_slug"),
    )
    op.create_index("ix_job_definitions_created_at", "job_definitions", ["created_at"])

    op.create_table(
        "job_runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_definition_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", Json, nullable=False),
        sa.Column("result", Json),
        sa.Column("error_message", sa.Text()),
        sa.Column("failure_reason", sa.String(64)),
        sa.Column("logs_tail", sa.Text()),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_ms", sa.Integer()),
        sa.Column("context", Json),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("completed_at", UtcDateTime()),
        sa.Column("duration_ms", sa.Integer()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_job_runs"),
        sa.ForeignKeyConstraint(
            ["job_definition_id"],
            ["job_definitions.id"],
            name="fk_job_runs_job_definition_id",
        ),
    )
    op.create_index(
        "ix_job_runs_job_definition_id_created_at", "job_runs", ["job_definition_id", "created_at"]
    )
    op.create_index("ix_job_runs_status", "job_runs", ["status"])
    op.create_index("ix_job_runs_created_at", "job_runs", ["created_at"])

    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("steps", Json, nullable=False),
        sa.Column("triggers", Json, nullable=False),
        sa.Column("parameters_schema", Json),
        sa.Column("default_parameters", Json, nullable=False),
        sa.Column("output_schema", Json),
        sa.Column("metadata", Json),
        sa.Column("dag", Json, nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_definitions"),
        sa.UniqueConstraint("slug", name="uq_workflow_definitions_slug"),
    )
    op.create_index("ix_workflow_definitions_created_at", "workflow_definitions", ["created_at"])

    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", Json, nullable=False),
        sa.Column("context", Json, nullable=False),
        sa.Column("output", Json),
        sa.Column("error_message", sa.Text()),
        sa.Column("current_step_id", sa.String(300)),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("triggered_by", sa.String(64)),
        sa.Column("trigger", Json),
        sa.Column("partition_key", sa.String(200)),
        sa.Column("run_key", sa.String(120)),
        sa.Column("run_key_normalized", sa.String(120)),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("completed_at", UtcDateTime()),
        sa.Column("duration_ms", sa.Integer()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_runs"),
        sa.ForeignKeyConstraint(
            ["workflow_definition_id"],
            ["workflow_definitions.id"],
            name="fk_workflow_runs_workflow_definition_id",
        ),
    )
    op.create_index(
        "ix_workflow_runs_workflow_definition_id_created_at",
        "workflow_runs",
        ["workflow_definition_id", "created_at"],
    )
    op.create_index("ix_workflow_runs_status", "workflow_runs", ["status"])
    op.create_index("ix_workflow_runs_created_at", "workflow_runs", ["created_at"])
    op.create_index(
        "uq_workflow_runs_active_run_key",
        "workflow_runs",
        ["workflow_definition_id", "run_key_normalized"],
        unique=True,
        postgresql_where=ACTIVE_RUN,
        sqlite_where=ACTIVE_RUN,
    )

    op.create_table(
        "workflow_run_steps",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("workflow_run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("job_run_id", sa.String(36)),
        sa.Column("input", Json),
        sa.Column("output", Json),
        sa.Column("error_message", sa.Text()),
        sa.Column("failure_reason", sa.String(64)),
        sa.Column("metrics", Json),
        sa.Column("parent_step_id", sa.String(300)),
        sa.Column("fanout_index", sa.Integer()),
        sa.Column("template_step_id", sa.String(100)),
        sa.Column("retry_state", sa.String(32)),
        sa.Column("next_attempt_at", UtcDateTime()),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("completed_at", UtcDateTime()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_run_steps"),
        sa.ForeignKeyConstraint(
            ["workflow_run_id"],
            ["workflow_runs.id"],
            name="fk_workflow_run_steps_workflow_run_id",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "workflow_run_id", "step_id", name="uq_workflow_run_steps_workflow_run_id_step_id"
        ),
    )
    op.create_index(
        "ix_workflow_run_steps_status_next_attempt_at",
        "workflow_run_steps",
        ["status", "next_attempt_at"],
    )

    op.create_table(
        "workflow_asset_declarations",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("asset_id", sa.String(200), nullable=False),
        sa.Column("asset_key", sa.String(200), nullable=False),
        sa.Column("asset_schema", Json),
        sa.Column("freshness", Json),
        sa.Column("auto_materialize", Json),
        sa.Column("partitioning", Json),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_asset_declarations"),
        sa.ForeignKeyConstraint(
            ["workflow_definition_id"],
            ["workflow_definitions.id"],
            name="fk_workflow_asset_declarations_workflow_definition_id",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "workflow_definition_id",
            "step_id",
            "direction",
            "asset_key",
            name="uq_asset_declarations_identity",
        ),
    )
    op.create_index(
        "ix_workflow_asset_declarations_asset_key_direction",
        "workflow_asset_declarations",
        ["asset_key", "direction"],
    )

    op.create_table(
        "audit_logs",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("subject", sa.String(200)),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("status_code", sa.Integer()),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_logs"),
    )


def downgrade() -> None:
    for table in (
        "audit_logs",
        "workflow_asset_declarations",
        "workflow_run_steps",
        "workflow_runs",
        "workflow_definitions",
        "job_runs",
        "job_definitions",
    ):
        op.drop_table(table)
