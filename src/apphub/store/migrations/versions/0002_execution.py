"""Execution: run claims, heartbeats, cancel requests, definition snapshots, job run retries.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import Json, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("claimed_by", sa.String(64)))
    op.add_column("workflow_runs", sa.Column("heartbeat_at", UtcDateTime()))
    op.add_column("workflow_runs", sa.Column("cancel_requested_at", UtcDateTime()))
    op.add_column("workflow_runs", sa.Column("wake_at", UtcDateTime()))
    op.add_column("workflow_runs", sa.Column("workflow_snapshot", Json))
    op.add_column("job_runs", sa.Column("claimed_by", sa.String(64)))
    op.add_column("job_runs", sa.Column("heartbeat_at", UtcDateTime()))
    op.add_column("job_runs", sa.Column("next_attempt_at", UtcDateTime()))
    op.add_column("job_runs", sa.Column("workflow_run_step_id", sa.String(36)))


def downgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        for column in ("workflow_run_step_id", "next_attempt_at", "heartbeat_at", "claimed_by"):
            batch.drop_column(column)
    with op.batch_alter_table("workflow_runs") as batch:
        for column in (
            "workflow_snapshot",
            "wake_at",
            "cancel_requested_at",
            "heartbeat_at",
            "claimed_by",
        ):
            batch.drop_column(column)
