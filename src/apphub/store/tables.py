"""The schema, as SQLAlchemy Core tables. Migrations must build exactly this (a test checks)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from apphub.store.types import AutoId, Json, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ACTIVE_RUN = text("status IN ('pending', 'running') AND run_key_normalized IS NOT NULL")


def _timestamps() -> list[Column[object]]:
    return [
        Column("created_at", UtcDateTime(), nullable=False),
        Column("updated_at", UtcDateTime(), nullable=False),
    ]


job_definitions = Table(
    "job_definitions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(32), nullable=False),
    Column("runtime", String(32), nullable=False),
    Column("entry_point", Text, nullable=False),
    Column("parameters_schema", Json),
    Column("default_parameters", Json, nullable=False),
    Column("output_schema", Json),
    Column("timeout_ms", Integer),
    Column("retry_policy", Json),
    Column("metadata", Json),
    *_timestamps(),
    Index(None, "created_at"),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_definition_id", String(36), ForeignKey("job_definitions.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parameters", Json, nullable=False),
    Column("result", Json),
    Column("error_message", Text),
    Column("failure_reason", String(64)),
    Column("logs_tail", Text),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_ms", Integer),
    Column("context", Json),
    Column("started_at", UtcDateTime()),
    Column("completed_at", UtcDateTime()),
    Column("duration_ms", Integer),
    *_timestamps(),
    # execution (0002): who runs it, proof of life, when a retry is due
    Column("claimed_by", String(64)),
    Column("heartbeat_at", UtcDateTime()),
    Column("next_attempt_at", UtcDateTime()),
    Column("workflow_run_step_id", String(36)),
    Index(None, "job_definition_id", "created_at"),
    Index(None, "status"),
    Index(None, "created_at"),
)

workflow_definitions = Table(
    "workflow_definitions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("description", Text),
    Column("steps", Json, nullable=False),
    Column("triggers", Json, nullable=False),
    Column("parameters_schema", Json),
    Column("default_parameters", Json, nullable=False),
    Column("output_schema", Json),
    Column("metadata", Json),
    Column("dag", Json, nullable=False),
    *_timestamps(),
    Index(None, "created_at"),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "workflow_definition_id", String(36), ForeignKey("workflow_definitions.id"), nullable=False
    ),
    Column("status", String(16), nullable=False),
    Column("parameters", Json, nullable=False),
    Column("context", Json, nullable=False),
    Column("output", Json),
    Column("error_message", Text),
    Column("current_step_id", String(300)),
    Column("metrics", Json, nullable=False),
    Column("triggered_by", String(64)),
    Column("trigger", Json),
    Column("partition_key", String(200)),
    Column("run_key", String(120)),
    Column("run_key_normalized", String(120)),
    Column("started_at", UtcDateTime()),
    Column("completed_at", UtcDateTime()),
    Column("duration_ms", Integer),
    *_timestamps(),
    # execution (0002): the worker that drives the run, its proof of life, a cancel request
    Column("claimed_by", String(64)),
    Column("heartbeat_at", UtcDateTime()),
    Column("cancel_requested_at", UtcDateTime()),
    Column("wake_at", UtcDateTime()),
    Column("workflow_snapshot", Json),
    Index(None, "workflow_definition_id", "created_at"),
    Index(None, "status"),
    Index(None, "created_at"),
    Index(
        "uq_workflow_runs_active_run_key",
        "workflow_definition_id",
        "run_key_normalized",
        unique=True,
        postgresql_where=ACTIVE_RUN,
        sqlite_where=ACTIVE_RUN,
    ),
)

workflow_run_steps = Table(
    "workflow_run_steps",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "workflow_run_id",
        String(36),
        ForeignKey("workflow_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("step_id", String(300), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("job_run_id", String(36)),
    Column("input", Json),
    Column("output", Json),
    Column("error_message", Text),
    Column("failure_reason", String(64)),
    Column("metrics", Json),
    Column("parent_step_id", String(300)),
    Column("fanout_index", Integer),
    Column("template_step_id", String(100)),
    Column("retry_state", String(32)),
    Column("next_attempt_at", UtcDateTime()),
    Column("started_at", UtcDateTime()),
    Column("completed_at", UtcDateTime()),
    *_timestamps(),
    UniqueConstraint("workflow_run_id", "step_id"),
    Index(None, "status", "next_attempt_at"),
)

workflow_asset_declarations = Table(
    "workflow_asset_declarations",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column(
        "workflow_definition_id",
        String(36),
        ForeignKey("workflow_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("step_id", String(100), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("asset_id", String(200), nullable=False),
    Column("asset_key", String(200), nullable=False),
    Column("asset_schema", Json),
    Column("freshness", Json),
    Column("auto_materialize", Json),
    Column("partitioning", Json),
    *_timestamps(),
    UniqueConstraint(
        "workflow_definition_id",
        "step_id",
        "direction",
        "asset_key",
        name="uq_asset_declarations_identity",
    ),
    Index(None, "asset_key", "direction"),
)

audit_logs = Table(
    "audit_logs",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("subject", String(200)),
    Column("action", String(100), nullable=False),
    Column("resource", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text),
    Column("status_code", Integer),
    Column("at", UtcDateTime(), nullable=False),
)

# --- assets (0003) -----------------------------------------------------------------------------
# A missing partition is stored as '' (not NULL), so uniqueness and "latest per partition"
# lookups behave the same on both databases.

workflow_run_step_assets = Table(
    "workflow_run_step_assets",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column(
        "workflow_definition_id", String(36), ForeignKey("workflow_definitions.id"), nullable=False
    ),
    Column(
        "workflow_run_id",
        String(36),
        ForeignKey("workflow_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "workflow_run_step_id",
        String(36),
        ForeignKey("workflow_run_steps.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("step_id", String(300), nullable=False),
    Column("asset_id", String(200), nullable=False),
    Column("asset_key", String(200), nullable=False),
    Column("partition_key", String(200), nullable=False),
    Column("payload", Json),
    Column("asset_schema", Json),
    Column("freshness", Json),
    Column("produced_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint(
        "workflow_run_step_id", "asset_key", "partition_key", name="uq_step_assets_identity"
    ),
    Index(
        "ix_step_assets_latest",
        "workflow_definition_id",
        "asset_key",
        "partition_key",
        "produced_at",
    ),
    Index("ix_step_assets_workflow_time", "workflow_definition_id", "asset_key", "produced_at"),
    Index("ix_step_assets_asset_time", "asset_key", "partition_key", "produced_at"),
)

workflow_asset_stale_partitions = Table(
    "workflow_asset_stale_partitions",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column(
        "workflow_definition_id",
        String(36),
        ForeignKey("workflow_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("asset_id", String(200), nullable=False),
    Column("asset_key", String(200), nullable=False),
    Column("partition_key", String(200), nullable=False),
    Column("note", Text),
    Column("requested_by", String(200)),
    Column("requested_at", UtcDateTime(), nullable=False),
    UniqueConstraint(
        "workflow_definition_id", "asset_key", "partition_key", name="uq_stale_partitions_identity"
    ),
)

workflow_asset_partition_parameters = Table(
    "workflow_asset_partition_parameters",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column(
        "workflow_definition_id",
        String(36),
        ForeignKey("workflow_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("asset_id", String(200), nullable=False),
    Column("asset_key", String(200), nullable=False),
    Column("partition_key", String(200), nullable=False),
    Column("parameters", Json, nullable=False),
    *_timestamps(),
    UniqueConstraint(
        "workflow_definition_id",
        "asset_key",
        "partition_key",
        name="uq_partition_parameters_identity",
    ),
)

workflow_run_asset_waits = Table(
    "workflow_run_asset_waits",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column(
        "workflow_run_id",
        String(36),
        ForeignKey("workflow_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "workflow_run_step_id",
        String(36),
        ForeignKey("workflow_run_steps.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("asset_key", String(200), nullable=False),
    Column("partition_key", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint(
        "workflow_run_step_id", "asset_key", "partition_key", name="uq_asset_waits_identity"
    ),
    Index("ix_asset_waits_asset", "asset_key", "partition_key"),
)

# --- events (0004) -----------------------------------------------------------------------------

workflow_events = Table(
    "workflow_events",
    metadata,
    Column("seq", AutoId, primary_key=True, autoincrement=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("type", String(256), nullable=False),
    Column("source", String(256), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("payload", Json, nullable=False),
    Column("correlation_id", String(256)),
    Column("ttl_ms", BigInteger),
    Column("metadata", Json),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("available_at", UtcDateTime()),
    Index("ix_workflow_events_time", "occurred_at", "id"),
    Index("ix_workflow_events_type", "type", "occurred_at", "id"),
    Index("ix_workflow_events_source", "source", "occurred_at", "id"),
    Index("ix_workflow_events_correlation", "correlation_id"),
    Index("ix_workflow_events_status", "status", "available_at"),
    Index("ix_workflow_events_received", "received_at"),
)
Index("ix_workflow_events_payload", workflow_events.c.payload, postgresql_using="gin").ddl_if(
    dialect="postgresql"
)

# --- saved event views and cluster-wide metric counters (0005) --------------------------------

event_saved_views = Table(
    "event_saved_views",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("slug", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("owner_subject", String(200), nullable=False),
    Column("filters", Json, nullable=False),
    Column("shared", Boolean, nullable=False),
    Column("apply_count", Integer, nullable=False),
    Column("last_applied_at", UtcDateTime()),
    *_timestamps(),
    Index(None, "owner_subject"),
)

metric_counters = Table(
    "metric_counters",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("labels", String(500), primary_key=True),
    Column("value", Float(precision=53), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
"""Counters shared by every process (Prometheus totals stay right with many processes)."""

# --- durable timers and the asset materializer (0006) -----------------------------------------

durable_timers = Table(
    "durable_timers",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("key", String(500), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("payload", Json, nullable=False),
    Column("claimed_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("as_of", UtcDateTime()),
    UniqueConstraint("kind", "key", name="uq_durable_timers_identity"),
    Index("ix_durable_timers_due", "due_at"),
)
"""Everything delayed (freshness expiry, cooldown ends): a row with a due time."""

materializer_events = Table(
    "materializer_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("event_type", String(256), nullable=False),
    Column("handled_at", UtcDateTime(), nullable=False),
    Index(None, "handled_at"),
)
"""Events the materializer has handled, written with its decisions: a redelivery is a no-op,
and an event missing here after its hand-off is found and handled by the repair loop."""


def _workflow_partition_key() -> list[Column[object]]:
    """(workflow, partition): the key of a materializer row; gone with its workflow."""
    return [
        Column(
            "workflow_definition_id",
            String(36),
            ForeignKey("workflow_definitions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("partition_key", String(200), primary_key=True),
    ]


materializer_claims = Table(
    "materializer_claims",
    metadata,
    *_workflow_partition_key(),
    Column("workflow_run_id", String(36), nullable=False, unique=True),
    Column("reason", String(32), nullable=False),
    Column("cause", Json, nullable=False),
    Column("claimed_at", UtcDateTime(), nullable=False),
    Column("follow_up", Json),
    Column("follow_up_at", UtcDateTime()),
)
"""The one in-flight auto run of a (workflow, partition), why it runs, and the newest
upstream change coalesced into it (its follow-up)."""

materializer_cooldowns = Table(
    "materializer_cooldowns",
    metadata,
    *_workflow_partition_key(),
    Column("failures", Integer, nullable=False),
    Column("next_eligible_at", UtcDateTime()),
    Column("pending", Json),
    Column("updated_at", UtcDateTime(), nullable=False),
)
"""Consecutive failures of a (workflow, partition), until when it waits, and the work it is
owed when the wait is over."""

materializer_decisions = Table(
    "materializer_decisions",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False),
    Column("event_type", String(256), nullable=False),
    Column("workflow_definition_id", String(36), nullable=False),
    Column("workflow_slug", String(100), nullable=False),
    Column("asset_id", String(200), nullable=False),
    Column("asset_key", String(200), nullable=False),
    Column("upstream_asset_id", String(200)),
    Column("partition_key", String(200), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("workflow_run_id", String(36)),
    Column("at", UtcDateTime(), nullable=False),
    UniqueConstraint(
        "event_id",
        "workflow_definition_id",
        "partition_key",
        name="uq_materializer_decisions_identity",
    ),
    Index("ix_materializer_decisions_workflow", "workflow_definition_id", "at"),
    Index("ix_materializer_decisions_asset", "asset_key", "at"),
)
"""Why each (event, workflow, partition) did or did not run; a redelivery changes nothing.
`asset_id` is the asset the workflow would materialize; `upstream_asset_id` what changed."""

# --- event triggers and schedules (0007) ------------------------------------------------------

workflow_event_triggers = Table(
    "workflow_event_triggers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "workflow_definition_id",
        String(36),
        ForeignKey("workflow_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("event_type", String(200), nullable=False),
    Column("event_source", String(200)),
    Column("predicates", Json, nullable=False),
    Column("parameter_template", Json),
    Column("run_key_template", String(500)),
    Column("idempotency_key_expression", String(200)),
    Column("idempotency_ttl_ms", BigInteger, nullable=False),
    Column("throttle_window_ms", Integer),
    Column("throttle_count", Integer),
    Column("max_concurrency", Integer),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("metadata", Json),
    Column("paused_until", UtcDateTime()),
    Column("recent_failures", Json),
    *_timestamps(),
    Index("ix_event_triggers_type", "event_type", "status"),
    Index("ix_event_triggers_workflow", "workflow_definition_id", "created_at"),
)
"""A workflow's event triggers; `paused_until` and `recent_failures` (the failure times inside
the error window) are the auto-pause state, kept on the row the decisions lock."""

workflow_trigger_deliveries = Table(
    "workflow_trigger_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "trigger_id",
        String(36),
        ForeignKey("workflow_event_triggers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("workflow_run_id", String(36)),
    Column("dedupe_key", String(500)),
    Column("next_attempt_at", UtcDateTime()),
    Column("launched_at", UtcDateTime()),
    *_timestamps(),
    UniqueConstraint("trigger_id", "event_id", name="uq_trigger_deliveries_identity"),
    Index("ix_trigger_deliveries_created", "trigger_id", "created_at"),
    Index("ix_trigger_deliveries_launched", "trigger_id", "launched_at"),
    Index("ix_trigger_deliveries_dedupe", "trigger_id", "dedupe_key", "created_at"),
    Index("ix_trigger_deliveries_run", "workflow_run_id"),
    Index("ix_trigger_deliveries_retry", "status", "next_attempt_at"),
)
"""What each trigger did with each event it matched; one row per (trigger, event), so a
redelivered event changes nothing."""

trigger_events = Table(
    "trigger_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("event_type", String(256), nullable=False),
    Column("handled_at", UtcDateTime(), nullable=False),
    Index(None, "handled_at"),
)
"""Events the trigger worker has evaluated: one whose hand-off was lost is found and handled
by the repair loop."""

workflow_schedules = Table(
    "workflow_schedules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "workflow_definition_id",
        String(36),
        ForeignKey("workflow_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(200)),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("parameters", Json, nullable=False),
    Column("start_window", UtcDateTime()),
    Column("end_window", UtcDateTime()),
    Column("catch_up", Boolean, nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("last_occurrence", UtcDateTime()),
    Column("next_run_at", UtcDateTime()),
    Column("last_run_id", String(36)),
    Column("last_error", Text),
    *_timestamps(),
    Index("ix_workflow_schedules_workflow", "workflow_definition_id", "created_at"),
)
"""Cron schedules. `last_occurrence` is the watermark: occurrences after it are owed, and it
moves in the transaction that creates their runs, so an occurrence never runs twice."""

# --- the service registry (0008) --------------------------------------------------------------

services = Table(
    "services",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("slug", String(100), nullable=False, unique=True),
    Column("display_name", String(200)),
    Column("base_url", Text, nullable=False),
    Column("health_path", String(500), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_message", Text),
    Column("last_checked_at", UtcDateTime()),
    Column("latency_ms", Integer),
    Column("metadata", Json),
    *_timestamps(),
)
"""Registered HTTP services, and what their last health check saw."""
