"""Assets: productions (versions), stale marks, partition parameters, waits for missing assets.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import AutoId, Json, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column("id", AutoId, nullable=False, autoincrement=True)


def _fk(column: str, target: str, table: str, cascade: bool = True) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=f"fk_{table}_{column}",
        ondelete="CASCADE" if cascade else None,
    )


def upgrade() -> None:
    op.create_table(
        "workflow_run_step_assets",
        _id(),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("workflow_run_id", sa.String(36), nullable=False),
        sa.Column("workflow_run_step_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(300), nullable=False),
        sa.Column("asset_id", sa.String(200), nullable=False),
        sa.Column("asset_key", sa.String(200), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("payload", Json),
        sa.Column("asset_schema", Json),
        sa.Column("freshness", Json),
        sa.Column("produced_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_run_step_assets"),
        _fk("workflow_definition_id", "workflow_definitions", "workflow_run_step_assets", False),
        _fk("workflow_run_id", "workflow_runs", "workflow_run_step_assets"),
        _fk("workflow_run_step_id", "workflow_run_steps", "workflow_run_step_assets"),
        sa.UniqueConstraint(
            "workflow_run_step_id", "asset_key", "partition_key", name="uq_step_assets_identity"
        ),
    )
    op.create_index(
        "ix_step_assets_latest",
        "workflow_run_step_assets",
        ["workflow_definition_id", "asset_key", "partition_key", "produced_at"],
    )
    op.create_index(
        "ix_step_assets_workflow_time",
        "workflow_run_step_assets",
        ["workflow_definition_id", "asset_key", "produced_at"],
    )
    op.create_index(
        "ix_step_assets_asset_time",
        "workflow_run_step_assets",
        ["asset_key", "partition_key", "produced_at"],
    )

    op.create_table(
        "workflow_asset_stale_partitions",
        _id(),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("asset_id", sa.String(200), nullable=False),
        sa.Column("asset_key", sa.String(200), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("requested_by", sa.String(200)),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_asset_stale_partitions"),
        _fk("workflow_definition_id", "workflow_definitions", "workflow_asset_stale_partitions"),
        sa.UniqueConstraint(
            "workflow_definition_id",
            "asset_key",
            "partition_key",
            name="uq_stale_partitions_identity",
        ),
    )

    op.create_table(
        "workflow_asset_partition_parameters",
        _id(),
        sa.Column("workflow_definition_id", sa.String(36), nullable=False),
        sa.Column("asset_id", sa.String(200), nullable=False),
        sa.Column("asset_key", sa.String(200), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("parameters", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_asset_partition_parameters"),
        _fk(
            "workflow_definition_id", "workflow_definitions", "workflow_asset_partition_parameters"
        ),
        sa.UniqueConstraint(
            "workflow_definition_id",
            "asset_key",
            "partition_key",
            name="uq_partition_parameters_identity",
        ),
    )

    op.create_table(
        "workflow_run_asset_waits",
        _id(),
        sa.Column("workflow_run_id", sa.String(36), nullable=False),
        sa.Column("workflow_run_step_id", sa.String(36), nullable=False),
        sa.Column("asset_key", sa.String(200), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_run_asset_waits"),
        _fk("workflow_run_id", "workflow_runs", "workflow_run_asset_waits"),
        _fk("workflow_run_step_id", "workflow_run_steps", "workflow_run_asset_waits"),
        sa.UniqueConstraint(
            "workflow_run_step_id", "asset_key", "partition_key", name="uq_asset_waits_identity"
        ),
    )
    op.create_index(
        "ix_asset_waits_asset", "workflow_run_asset_waits", ["asset_key", "partition_key"]
    )


def downgrade() -> None:
    for table in (
        "workflow_run_asset_waits",
        "workflow_asset_partition_parameters",
        "workflow_asset_stale_partitions",
        "workflow_run_step_assets",
    ):
        op.drop_table(table)
