"""The asset store on both databases: "latest" is always the newest of the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from apphub.store import assets as asset_store
from apphub.store.database import Database
from apphub.store.rows import new_id
from apphub.store.tables import (
    workflow_definitions,
    workflow_run_step_assets,
    workflow_run_steps,
    workflow_runs,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)
productions = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["", "eu", "us"]), st.integers(0, 50)),
    min_size=1,
    max_size=15,
)


async def _workflow(database: Database) -> str:
    workflow_id = new_id()
    async with database.write() as connection:
        await connection.execute(
            insert(workflow_definitions).values(
                id=workflow_id,
                slug=f"wf-{workflow_id[:8]}",
                name="wf",
                version=1,
                steps=[],
                triggers=[],
                default_parameters={},
                dag={},
                created_at=BASE,
                updated_at=BASE,
            )
        )
    return workflow_id


async def _record(
    database: Database, workflow_id: str, sequence: list[tuple[str, str, int]]
) -> None:
    """Each production as its own run step, as the orchestrator records them."""
    async with database.write() as connection:
        for asset, partition, offset in sequence:
            run_id, step_row = new_id(), new_id()
            await connection.execute(
                insert(workflow_runs).values(
                    id=run_id,
                    workflow_definition_id=workflow_id,
                    status="succeeded",
                    parameters={},
                    context={},
                    metrics={},
                    created_at=BASE,
                    updated_at=BASE,
                )
            )
            await connection.execute(
                insert(workflow_run_steps).values(
                    id=step_row,
                    workflow_run_id=run_id,
                    step_id="s",
                    status="succeeded",
                    attempt=1,
                    created_at=BASE,
                    updated_at=BASE,
                )
            )
            await asset_store.record_productions(
                connection,
                [step_row],
                [
                    _row(
                        workflow_id,
                        run_id,
                        step_row,
                        asset,
                        partition,
                        BASE + timedelta(seconds=offset),
                    )
                ],
            )


def _row(
    workflow_id: str, run_id: str, step_row: str, asset: str, partition: str, produced_at: datetime
) -> dict[str, Any]:
    return {
        "workflow_definition_id": workflow_id,
        "workflow_run_id": run_id,
        "workflow_run_step_id": step_row,
        "step_id": "s",
        "asset_id": asset,
        "asset_key": asset,
        "partition_key": partition,
        "payload": {"at": produced_at.isoformat()},
        "produced_at": produced_at,
        "created_at": produced_at,
    }


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=productions)
async def test_latest_is_the_newest_of_the_history(
    database: Database, sequence: list[tuple[str, str, int]]
) -> None:
    workflow_id = await _workflow(database)
    await _record(database, workflow_id, sequence)
    async with database.read() as connection:
        latest = await asset_store.latest_by_asset(connection, workflow_id)
        for asset in {a for a, _, _ in sequence}:
            history = await asset_store.history(connection, workflow_id, asset, None, 100)
            times = [row.produced_at for row in history]
            assert times == sorted(times, reverse=True)
            assert len(history) == sum(1 for a, _, _ in sequence if a == asset)
            assert latest[asset].produced_at == max(times)
            assert latest[asset].id == history[0].id
            summaries = await asset_store.partition_summaries(connection, workflow_id, asset)
            for partition, (total, newest) in summaries.items():
                mine = [r for r in history if r.partition_key == partition]
                assert total == len(mine)
                assert newest.produced_at == max(r.produced_at for r in mine)
    async with database.write() as connection:
        await connection.execute(
            delete(workflow_run_step_assets).where(
                workflow_run_step_assets.c.workflow_definition_id == workflow_id
            )
        )


async def test_a_step_recording_again_replaces_its_earlier_records(database: Database) -> None:
    workflow_id = await _workflow(database)
    await _record(database, workflow_id, [("a", "", 1)])
    async with database.read() as connection:
        (first,) = await asset_store.history(connection, workflow_id, "a", None, 10)
    async with database.write() as connection:
        later = BASE + timedelta(seconds=9)
        await asset_store.record_productions(
            connection,
            [first.workflow_run_step_id],
            [_row(workflow_id, first.workflow_run_id, first.workflow_run_step_id, "a", "", later)],
        )
    async with database.read() as connection:
        history = await asset_store.history(connection, workflow_id, "a", None, 10)
    assert [row.produced_at for row in history] == [BASE + timedelta(seconds=9)]
